"""What a job's URLs may name: the configured transfer roots and the staging area of the job's
own Argo job; never another job's directory, nor a job's control directory.

The Argo staging area and the sites' work directories hold every job's data, and each job's
``.edgecelery/`` holds the exit code the poller trusts: one job naming another's directory
could read its data or forge its result. So they are fenced: a URL inside a fence is refused
unless a more specific allowed area holds it (a job's own staging directory lies inside the
fenced staging area). Intake checks a message with the scope of a job whose id is not known
yet, so no staging directory is its own; each transfer step checks again with its own job's.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from urllib.parse import unquote, urlsplit

from backends.batchscript import CONTROL_DIR
from edgeceleryapp.errors import UnsafePath
from edgeceleryapp.settings import Settings

LOCAL_SCHEMES = frozenset({"local", "file"})


@dataclass(frozen=True)
class Area:
    """A directory a URL may or may not name: on a host, or on this machine's file systems
    (host ``""``), with a label for errors."""

    host: str
    path: PurePosixPath
    label: str = ""

    def holds(self, hosts: set[str], parts: tuple[str, ...]) -> bool:
        """Whether the path of ``parts`` on one of ``hosts`` lies in this area."""
        mine = self.path.parts
        return self.host in hosts and parts[: len(mine)] == mine


def _loopback(host: str) -> bool:
    """A host that is this machine: its URLs reach the local file systems too."""
    if not host or host == "localhost":
        return bool(host)
    if not (host[0].isdigit() or ":" in host):
        return False
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def where(url: str) -> tuple[str, PurePosixPath]:
    """The host (``""`` for local:// and file://) and the decoded, normalised path a URL names;
    a '..' anywhere is refused, since the path is compared before any file system sees it."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    local = scheme in LOCAL_SCHEMES
    if local and parts.netloc not in ("", "localhost"):
        raise UnsafePath(f"{url}: {scheme}:// URLs name no host; write {scheme}:///absolute/path")
    host = "" if local else (parts.hostname or "").lower()
    path = PurePosixPath(unquote(parts.path) or "/")
    if ".." in path.parts:
        raise UnsafePath(f"{url}: '..' is not allowed in a transfer path")
    if local and not path.is_absolute():
        raise UnsafePath(f"{url}: path must be absolute")
    return host, path


def _local(path: Path, label: str = "") -> list[Area]:
    """A local directory as written and resolved: a URL may name it either way."""
    written = PurePosixPath(os.path.abspath(path))
    resolved = PurePosixPath(Path(written).resolve())
    return [Area("", p, label) for p in dict.fromkeys([written, resolved])]


def _url_area(url: str, label: str) -> list[Area]:
    host, path = where(url)
    return [Area(host, path, label)] if host else _local(Path(path), label)


@dataclass(frozen=True)
class Scope:
    """The local roots a job's URLs may name, the job's own staging area, and the fences.
    The areas are worked out (and the roots resolved) once, so a check touches no file
    system: intake checks every URL of every message."""

    roots: list[Path]
    own: list[Area] = field(default_factory=list)
    fences: list[Area] = field(default_factory=list)
    candidates: list[tuple[Area, bool]] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        allowed = [a for root in self.roots for a in _local(root)] + self.own
        candidates = [(a, False) for a in allowed] + [(a, True) for a in self.fences]
        object.__setattr__(self, "candidates", candidates)

    def local_roots(self) -> list[Path]:
        """The local directories a local:// URL of this job may name."""
        return [*self.roots, *(Path(a.path) for a in self.own if not a.host)]

    def problem(self, url: str) -> str | None:
        """Why ``url`` is outside this scope, or None."""
        try:
            host, path = where(url)
        except UnsafePath as exc:
            return str(exc).removeprefix(f"{url}: ")
        if CONTROL_DIR in path.parts:
            return f"names a job's control directory ({CONTROL_DIR}); no URL may"
        # A server on this machine (gsiftp://127.0.0.1/...) reaches its directories too.
        hosts = {host, ""} if _loopback(host) else {host}
        # The most specific area holding the URL decides; a fence wins a tie.
        parts = path.parts
        held = [
            (len(a.path.parts), fenced, a) for a, fenced in self.candidates if a.holds(hosts, parts)
        ]
        if held:
            _, fenced, area = max(held, key=lambda m: m[:2])
            if fenced:
                return f"names {area.label}, which holds other jobs' files; no job's URL may"
            return None
        if not host:
            return "is outside the directories this site may transfer from/to"
        return None

    def check(self, url: str, what: str = "") -> None:
        """Refuse ``url`` outside this scope; ``what`` (a field) prefixes the reason."""
        if (problem := self.problem(url)) is not None:
            raise UnsafePath(f"{what + ': ' if what else ''}{url}: {problem}")


def _fences(settings: Settings) -> list[Area]:
    argo = settings.argo
    fences = _local(argo.staging_dir, "the Argo staging area")
    fences += _url_area(argo.staging_url_for(), "the Argo staging area")
    for name, site in settings.sites.items():
        fences += _local(site.workdir, f"site {name}'s work directory")
    return list(dict.fromkeys(fences))


def _own(settings: Settings, argo_id: int | None) -> list[Area]:
    """The staging directory of the job's own Argo job, as its URLs name it (staging_url) and
    as this machine sees it (staging_dir); none for a job not part of a stored Argo job."""
    if argo_id is None:
        return []
    argo = settings.argo
    own = _local(argo.staging_dir / str(argo_id), "its own staging directory")
    own += _url_area(argo.staging_url_for(str(argo_id)), "its own staging directory")
    return list(dict.fromkeys(own))


def for_site(settings: Settings, site: str, argo_id: int | None) -> Scope:
    """The scope of a subjob at ``site`` of Argo job ``argo_id`` (None: a Balsam-only job, or
    a message not stored yet)."""
    return Scope(
        list(settings.site(site).transfer_roots), _own(settings, argo_id), _fences(settings)
    )


def for_argo(settings: Settings, argo_id: int | None) -> Scope:
    """The scope of an Argo job's own input_url and output_url."""
    return Scope(list(settings.argo.transfer_roots), _own(settings, argo_id), _fences(settings))


_AT_INTAKE: dict[str | None, tuple[Settings, Scope]] = {}


def at_intake(settings: Settings, site: str | None) -> Scope:
    """The scope of a message not stored yet (no staging directory is its own) at ``site``
    (None: the Argo job's own URLs), made once per settings: intake asks for every URL."""
    cached = _AT_INTAKE.get(site)
    if cached is None or cached[0] is not settings:
        scope = for_argo(settings, None) if site is None else for_site(settings, site, None)
        cached = _AT_INTAKE[site] = (settings, scope)
    return cached[1]
