"""The transfer plug-in interface: bring a URL's data into a local directory, or send a local
directory to a URL. Plug-ins are picked by URL scheme (seed 000 2.3).

Data land once: each file is written under a temporary name beside its destination and renamed
into place when complete and verified, so a partial file never looks complete and a re-run
skips what already arrived intact.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable
from pathlib import Path
from urllib.parse import urlsplit

from edgeceleryapp.errors import PermanentError, UnsafePath

# Control files of a job (batch script, exit code) stay at the site.
EXCLUDE = frozenset({".edgecelery"})


class Transfer(ABC):
    """Moves data for one site. ``roots`` are the local directories its URLs may name."""

    schemes: tuple[str, ...] = ()

    def __init__(self, roots: Iterable[Path]):
        self.roots = [Path(r).resolve() for r in roots]

    @abstractmethod
    def download(self, url: str, dest: Path) -> None:
        """Copy the file or directory at ``url`` into the local directory ``dest``."""

    @abstractmethod
    def upload(self, src: Path, url: str) -> None:
        """Copy the contents of the local directory ``src`` to the directory at ``url``."""

    def confine(self, path: Path) -> Path:
        """Refuse a local path outside the allowed roots (after resolving links and '..')."""
        resolved = path.resolve()
        if not any(resolved == r or r in resolved.parents for r in self.roots):
            raise UnsafePath(f"{path}: outside the directories this site may transfer from/to")
        return resolved


def url_path(url: str) -> str:
    parts = urlsplit(url)
    if not parts.path:
        raise PermanentError(f"{url}: URL has no path")
    return parts.path
