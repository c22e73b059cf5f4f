"""``local://`` and ``file://``: copies on file systems this host mounts (the HUST'17 paper: cp)."""

from __future__ import annotations

import fcntl
import os
import shutil
from pathlib import Path
from urllib.parse import unquote, urlsplit

from backends.transfers.base import EXCLUDE, Transfer, TransferContext
from backends.transfers.checksum import CHUNK, file_digest, hasher
from edgeceleryapp.errors import PermanentError, TransientError


def same_file(a: Path, b: Path, algorithm: str) -> bool:
    return (
        b.is_file()
        and a.stat().st_size == b.stat().st_size
        and file_digest(a, algorithm) == file_digest(b, algorithm)
    )


def copy_file_atomic(src: Path, dst: Path, context: TransferContext, done: list[int]) -> None:
    """Copy under a temporary name beside ``dst``, verify the checksum, fsync, rename.

    The temporary name comes from the step's token, so a re-run after a crash replaces the
    leftover. An exclusive lock on it keeps a concurrent duplicate of the same step from
    writing into it at the same time; the kernel drops the lock of a killed process.
    """
    algorithm = context.settings.checksum
    if same_file(src, dst, algorithm):
        return
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(context.part_name(dst.name))
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise TransientError(f"{dst}: another transfer is writing it") from None
    source_digest = hasher(algorithm)
    try:
        os.ftruncate(fd, 0)
        with src.open("rb") as fin, os.fdopen(fd, "wb", closefd=False) as fout:
            while block := fin.read(CHUNK):
                source_digest.update(block)
                fout.write(block)
                done[0] += len(block)
                if context.progress:
                    context.progress(done[0])
            fout.flush()
            os.fsync(fout.fileno())
        if file_digest(tmp, algorithm) != source_digest.hexdigest():
            raise TransientError(f"{dst}: {algorithm} of the copy does not match its source")
        shutil.copystat(src, tmp)
        os.replace(tmp, dst)
    finally:
        tmp.unlink(missing_ok=True)
        os.close(fd)


def copy_tree(src: Path, dst: Path, context: TransferContext) -> None:
    """Copy a file into ``dst`` (by name) or a directory's contents into ``dst``."""
    done = [0]
    if src.is_file():
        copy_file_atomic(src, dst / src.name, context, done)
        return
    if not src.is_dir():
        raise PermanentError(f"{src}: no such file or directory")
    for root, dirs, files in os.walk(src):
        dirs[:] = sorted(d for d in dirs if d not in EXCLUDE)
        rel = Path(root).relative_to(src)
        (dst / rel).mkdir(parents=True, exist_ok=True)
        for name in sorted(files):
            if ".part-" in name and name.startswith("."):
                continue
            copy_file_atomic(Path(root) / name, dst / rel / name, context, done)


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
        return self.confine(path)

    def download(self, url: str, dest: Path) -> None:
        src = self._path(url)
        if not src.exists():
            raise PermanentError(f"{url}: no such file or directory")
        try:
            copy_tree(src, dest, self.context)
        except PermissionError as exc:
            raise PermanentError(f"{url}: permission denied ({exc.filename})") from None

    def upload(self, src: Path, url: str) -> None:
        dest = self._path(url)
        try:
            copy_tree(src, dest, self.context)
        except PermissionError as exc:
            raise PermanentError(f"{url}: permission denied ({exc.filename})") from None
