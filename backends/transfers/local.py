"""``local://`` and ``file://``: copies on file systems this host mounts (the HUST'17 paper: cp)."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from urllib.parse import unquote, urlsplit

from backends.transfers import paths
from backends.transfers.base import EXCLUDE, Transfer, TransferContext
from backends.transfers.checksum import CHUNK, file_digest, hasher
from edgeceleryapp.errors import PermanentError, TransientError


def same_file(a: Path, b: Path, algorithm: str, what: str) -> bool:
    return (
        paths.kind(b, what) == "file"
        and os.lstat(a).st_size == os.lstat(b).st_size
        and file_digest(a, algorithm) == file_digest(b, algorithm)
    )


def copy_file_atomic(
    src: Path, dst: Path, context: TransferContext, done: list[int], what: str
) -> None:
    """Copy under a temporary name beside ``dst``, verify the checksum, fsync, rename.

    Both ends are opened with O_NOFOLLOW: a link is refused, never read or written through.
    The temporary name comes from the step's token, so a re-run after a crash replaces the
    leftover. An exclusive lock on it keeps a concurrent duplicate of the same step from
    writing into it at the same time; the kernel drops the lock of a killed process.
    """
    algorithm = context.settings.checksum
    if same_file(src, dst, algorithm, what):
        return
    tmp = dst.with_name(context.part_name(dst.name))
    fd = paths.open_write(tmp, what)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise TransientError(f"{dst}: another transfer is writing it") from None
    source_digest = hasher(algorithm)
    try:
        os.ftruncate(fd, 0)
        with paths.open_read(src, what) as fin, os.fdopen(fd, "wb", closefd=False) as fout:
            while block := fin.read(CHUNK):
                source_digest.update(block)
                fout.write(block)
                done[0] += len(block)
                if context.progress:
                    context.progress(done[0])
            fout.flush()
            os.fsync(fout.fileno())
            source = os.fstat(fin.fileno())
        if file_digest(tmp, algorithm) != source_digest.hexdigest():
            raise TransientError(f"{dst}: {algorithm} of the copy does not match its source")
        os.fchmod(fd, source.st_mode & 0o777)
        os.utime(fd, ns=(source.st_atime_ns, source.st_mtime_ns))
        os.replace(tmp, dst)
    finally:
        tmp.unlink(missing_ok=True)
        os.close(fd)


def _skipped(name: str) -> bool:
    return name in EXCLUDE or (name.startswith(".") and ".part-" in name)


def copy_tree(src: Path, dst: Path, context: TransferContext, what: str) -> None:
    """Copy a file into ``dst`` (by name) or a directory's contents into ``dst``; a link at
    either end or inside the tree is refused (``paths``), never followed."""
    done = [0]
    found = paths.kind(src, what)
    if found is None:
        raise PermanentError(f"{what}: no such file or directory")
    paths.make_dirs(dst, what)
    if found == "file":
        copy_file_atomic(src, dst / src.name, context, done, what)
        return
    for rel, kind in paths.walk(src, what, _skipped):
        if kind == "dir":
            paths.make_dirs(dst / rel, what)
        else:
            copy_file_atomic(src / rel, dst / rel, context, done, what)


class LocalTransfer(Transfer):
    schemes = ("local", "file")

    def _path(self, url: str) -> Path:
        parts = urlsplit(url)
        if parts.netloc not in ("", "localhost"):
            raise PermanentError(
                f"{url}: {parts.scheme}:// URLs name no host; write {parts.scheme}:///absolute/path"
            )
        path = Path(unquote(parts.path))
        if not path.is_absolute():
            raise PermanentError(f"{url}: path must be absolute")
        return self.confine_url_path(url, path)

    def download(self, url: str, dest: Path) -> None:
        src, dest = self._path(url), self.confine(dest)
        try:
            copy_tree(src, dest, self.context, url)
        except PermissionError as exc:
            raise PermanentError(f"{url}: permission denied ({exc.filename})") from None

    def upload(self, src: Path, url: str) -> None:
        src, dest = self.confine(src), self._path(url)
        try:
            copy_tree(src, dest, self.context, url)
        except PermissionError as exc:
            raise PermanentError(f"{url}: permission denied ({exc.filename})") from None
