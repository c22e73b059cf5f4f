"""``local://`` and ``file://``: copies on file systems this host mounts (seed 000: cp)."""

from __future__ import annotations

import hashlib
import os
import shutil
import uuid
from pathlib import Path
from urllib.parse import unquote, urlsplit

from backends.transfers.base import EXCLUDE, Transfer
from edgeceleryapp.errors import PermanentError, TransientError

CHUNK = 1 << 20


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


def same_file(a: Path, b: Path) -> bool:
    return b.is_file() and a.stat().st_size == b.stat().st_size and sha256(a) == sha256(b)


def copy_file_atomic(src: Path, dst: Path) -> None:
    """Copy to a unique temporary name beside ``dst``, verify, fsync, rename into place."""
    if same_file(src, dst):
        return
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.part-{uuid.uuid4().hex[:12]}")
    try:
        with src.open("rb") as fin, tmp.open("wb") as fout:
            shutil.copyfileobj(fin, fout, CHUNK)
            fout.flush()
            os.fsync(fout.fileno())
        if tmp.stat().st_size != src.stat().st_size or sha256(tmp) != sha256(src):
            raise TransientError(f"{dst}: copy does not match its source, will copy again")
        shutil.copystat(src, tmp)
        os.replace(tmp, dst)
    finally:
        tmp.unlink(missing_ok=True)


def copy_tree(src: Path, dst: Path) -> None:
    """Copy a file into ``dst`` (by name) or a directory's contents into ``dst``."""
    if src.is_file():
        copy_file_atomic(src, dst / src.name)
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
            copy_file_atomic(Path(root) / name, dst / rel / name)


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
            copy_tree(src, dest)
        except PermissionError as exc:
            raise PermanentError(f"{url}: permission denied ({exc.filename})") from None

    def upload(self, src: Path, url: str) -> None:
        dest = self._path(url)
        try:
            copy_tree(src, dest)
        except PermissionError as exc:
            raise PermanentError(f"{url}: permission denied ({exc.filename})") from None
