"""The transfer plug-in interface: bring a URL's data into a local directory, or send a local
directory to a URL. Plug-ins are picked by URL scheme (the HUST'17 paper, 2.3).

Data land once: each file is written under a temporary name beside its destination and renamed
into place when complete and verified, so a partial file never looks complete and a re-run
skips what already arrived intact.
"""

from __future__ import annotations

import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlsplit

from edgeceleryapp.errors import PermanentError, UnsafePath
from edgeceleryapp.settings import TransferSettings

# Control files of a job (batch script, exit code) stay at the site.
EXCLUDE = frozenset({".edgecelery"})


@dataclass
class TransferContext:
    """What a transfer may touch and how: the local roots its paths must stay inside, the
    site's transfer settings (credentials included), a progress callback, and a token that
    names temporary files, stable across re-runs of one step so a re-run replaces them."""

    roots: list[Path]
    settings: TransferSettings = field(default_factory=TransferSettings)
    token: str = ""
    progress: Callable[[int], None] | None = None

    def __post_init__(self) -> None:
        self.roots = [Path(r).resolve() for r in self.roots]

    def part_name(self, name: str) -> str:
        """The temporary name a file lands under before it is renamed into place."""
        return f".{name}.part-{self.token or uuid.uuid4().hex[:12]}"


class Transfer(ABC):
    """Moves data for one site or for the Argo service, by URL scheme."""

    schemes: tuple[str, ...] = ()

    def __init__(self, context: TransferContext):
        self.context = context
        self.roots = context.roots
        self.settings = context.settings

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


def check_url(url: str, settings: TransferSettings) -> None:
    """Schemes and hosts a site allows; no '..' in a remote path."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if settings.schemes is not None and scheme not in settings.schemes:
        raise PermanentError(f"{url}: scheme {scheme!r} is not allowed at this site")
    host = (parts.hostname or "").lower()
    if host and settings.hosts is not None and host not in settings.hosts:
        raise PermanentError(f"{url}: host {host!r} is not allowed at this site")
    if ".." in unquote(parts.path).split("/"):
        raise UnsafePath(f"{url}: '..' is not allowed in a transfer path")


def url_path(url: str) -> str:
    parts = urlsplit(url)
    if not parts.path:
        raise PermanentError(f"{url}: URL has no path")
    return parts.path
