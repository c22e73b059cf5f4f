"""Local paths confined to their roots without trusting the file system: no symbolic link is
followed, on the way to a file or inside a tree being copied.

A path is checked lexically first (absolute, no '..', under a root), then walked down from its
root one component at a time with lstat, and a link anywhere below the root is refused: a link
in a job's input folder would copy a file from outside every root into a work directory, and
a linked directory would let stage-out write outside them. Files are then opened with
O_NOFOLLOW, so a link put in place after the walk is refused by the kernel, not followed. The
roots are the operator's settings and are trusted as written (``/scratch`` may be a link to
``/gpfs/scratch``): each is resolved once.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import BinaryIO

from edgeceleryapp.errors import PermanentError, UnsafePath

LINK_REFUSED = "is a symbolic link; links are not followed"


def _forms(root: Path) -> list[Path]:
    """A root as written (made absolute) and resolved: a path may name it either way."""
    written = Path(os.path.abspath(root))
    resolved = written.resolve()
    return [written] if resolved == written else [written, resolved]


def confined(path: Path, roots: Sequence[Path], what: str) -> Path:
    """``path`` under one of ``roots`` with no link between the root and it, rewritten onto the
    resolved root. ``what`` names the path in errors (a URL, a field)."""
    if not path.is_absolute():
        raise UnsafePath(f"{what}: path must be absolute")
    if ".." in path.parts:
        raise UnsafePath(f"{what}: '..' is not allowed in a transfer path")
    for root in roots:
        for form in _forms(root):
            if path == form or form in path.parents:
                base = form.resolve()
                no_links(base, path.relative_to(form), what)
                return base.joinpath(path.relative_to(form))
    raise UnsafePath(f"{what}: outside the directories this site may transfer from/to")


def no_links(base: Path, rel: Path, what: str) -> None:
    """Refuse a link at any component of ``base/rel`` below ``base``; what does not exist yet
    is made later by ``make_dirs`` or an O_NOFOLLOW open, neither of which follows links."""
    current = base
    for part in rel.parts:
        current = current / part
        try:
            mode = os.lstat(current).st_mode
        except FileNotFoundError:
            return
        except NotADirectoryError:
            raise PermanentError(f"{what}: {current.parent} is not a directory") from None
        if stat.S_ISLNK(mode):
            raise UnsafePath(f"{what}: {current} {LINK_REFUSED}")


def kind(path: Path, what: str) -> str | None:
    """'file', 'dir' or None (absent), never following a link: a link or a special file (a
    FIFO would block a reader) is refused."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return None
    if stat.S_ISLNK(mode):
        raise UnsafePath(f"{what}: {path} {LINK_REFUSED}")
    if stat.S_ISDIR(mode):
        return "dir"
    if stat.S_ISREG(mode):
        return "file"
    raise PermanentError(f"{what}: {path} is not a regular file or directory")


def make_dirs(path: Path, what: str) -> None:
    """Create ``path`` and its missing parents; an existing link on the way is refused
    (mkdir never follows one it creates, and each existing component is lstat'ed)."""
    missing = []
    current = path
    while (found := kind(current, what)) is None:
        missing.append(current)
        current = current.parent
    if found != "dir":
        raise PermanentError(f"{what}: {current} is not a directory")
    for directory in reversed(missing):
        try:
            directory.mkdir()
        except FileExistsError:  # a concurrent duplicate of the step made it: check it
            if kind(directory, what) != "dir":
                raise PermanentError(f"{what}: {directory} is not a directory") from None


def walk(top: Path, what: str, skip: Callable[[str], bool]) -> Iterator[tuple[Path, str]]:
    """Every directory and regular file under ``top``, as (path relative to ``top``, kind),
    each directory before its contents, in name order; names ``skip`` accepts are left out.
    A link or a special file inside the tree is refused, not copied and not followed."""
    stack = [Path()]
    while stack:
        rel = stack.pop()
        with os.scandir(top / rel) as entries:
            found = sorted((e.name, e) for e in entries if not skip(e.name))
        subdirs = []
        for name, entry in found:
            if entry.is_symlink():
                raise UnsafePath(f"{what}: {top / rel / name} {LINK_REFUSED}")
            if entry.is_dir(follow_symlinks=False):
                yield rel / name, "dir"
                subdirs.append(rel / name)
            elif entry.is_file(follow_symlinks=False):
                yield rel / name, "file"
            else:
                raise PermanentError(f"{what}: {top / rel / name} is not a regular file")
        stack.extend(reversed(subdirs))


def _open(path: Path, flags: int, what: str) -> int:
    try:
        return os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise UnsafePath(f"{what}: {path} {LINK_REFUSED}") from None
        raise


def open_read(path: Path, what: str) -> BinaryIO:
    """A regular file opened for reading; a link is refused by the kernel (O_NOFOLLOW)."""
    fd = _open(path, os.O_RDONLY | os.O_NONBLOCK, what)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise PermanentError(f"{what}: {path} is not a regular file")
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


def open_write(path: Path, what: str, truncate: bool = False) -> int:
    """A file descriptor for writing ``path``, created if missing, never through a link."""
    return _open(path, os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if truncate else 0), what)
