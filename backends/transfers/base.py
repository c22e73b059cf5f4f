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

from backends import registry
from backends.batchscript import CONTROL_DIR
from backends.transfers import paths
from backends.transfers.scope import LOCAL_SCHEMES, Scope
from edgeceleryapp.errors import PermanentError, UnsafePath
from edgeceleryapp.settings import TransferSettings

# Control files of a job (batch script, exit code) stay at the site.
EXCLUDE = frozenset({CONTROL_DIR})


@dataclass
class TransferContext:
    """What a transfer may touch and how: the local roots its local:// URLs must stay inside,
    the roots of its own side (the step's directory; by default the same), the scope of its
    job (fences around other jobs' directories, checked by ``transfer_for``), the site's
    transfer settings (credentials included), a progress callback, and a token that names
    temporary files, stable across re-runs of one step so a re-run replaces them."""

    roots: list[Path]
    settings: TransferSettings = field(default_factory=TransferSettings)
    token: str = ""
    progress: Callable[[int], None] | None = None
    local_roots: list[Path] | None = None
    scope: Scope | None = None

    def __post_init__(self) -> None:
        self.roots = [Path(r) for r in self.roots]
        local = self.roots if self.local_roots is None else self.local_roots
        self.local_roots = [Path(r) for r in local]

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
        """The step's own local directory, refused outside its roots or through a link."""
        return paths.confined(path, self.context.local_roots or [], str(path))

    def confine_url_path(self, url: str, path: Path) -> Path:
        """The local path a local:// URL names, refused outside the roots or through a link."""
        return paths.confined(path, self.roots, url)


def check_url(url: str, settings: TransferSettings) -> None:
    """A plug-in for the scheme; no '..' in a path; the schemes a site allows; remote hosts only
    from its allowlist (``transfers.hosts``: empty, the default, allows none)."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    table = registry.TRANSFERS | settings.plugins
    if scheme not in table:
        raise PermanentError(
            f"{url}: no transfer plug-in for scheme {scheme!r} (known: {', '.join(sorted(table))})"
        )
    if ".." in unquote(parts.path).split("/"):
        raise UnsafePath(f"{url}: '..' is not allowed in a transfer path")
    if settings.schemes is not None and scheme not in settings.schemes:
        raise PermanentError(f"{url}: scheme {scheme!r} is not allowed at this site")
    if scheme in LOCAL_SCHEMES:
        return
    host = (parts.hostname or "").lower()
    if not settings.hosts:
        raise PermanentError(
            f"{url}: remote transfers are off at this site (transfers.hosts is empty), "
            f"so host {host!r} is not allowed"
        )
    if host not in settings.hosts:
        raise PermanentError(f"{url}: host {host!r} is not allowed at this site (transfers.hosts)")


def url_path(url: str) -> str:
    parts = urlsplit(url)
    if not parts.path:
        raise PermanentError(f"{url}: URL has no path")
    return parts.path
