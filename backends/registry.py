"""Which class serves each plug-in name, as ``"module:Class"`` strings (kombu's transport
aliases): a worker imports a plug-in only when a site names it, so paramiko and the other
plug-ins' dependencies stay out of processes that never use them. The settings check names
against these tables without importing anything heavy; a site's own plug-in is named by its
dotted path (``"mypkg.mymod:MyScheduler"`` or ``"mypkg.mymod.MyScheduler"``).
"""

from __future__ import annotations

import importlib
import re
from typing import TypeVar

from edgeceleryapp.errors import ConfigurationError

T = TypeVar("T")

SCHEDULERS: dict[str, str] = {
    "local": "backends.schedulers.local:LocalScheduler",
    "slurm": "backends.schedulers.slurm:SlurmScheduler",
    "pbs": "backends.schedulers.pbs:PBSProScheduler",
    "torque": "backends.schedulers.pbs:TorqueScheduler",
    "cobalt": "backends.schedulers.cobalt:CobaltScheduler",
    "condor": "backends.schedulers.condor:CondorScheduler",
    "lsf": "backends.schedulers.lsf:LSFScheduler",
    "sge": "backends.schedulers.sge:SGEScheduler",
}
RUNNERS: dict[str, str] = {
    "local": "backends.runners.local:LocalRunner",
    "ssh": "backends.runners.ssh:SSHRunner",
}
# Keyed by URL scheme.
TRANSFERS: dict[str, str] = {
    "local": "backends.transfers.local:LocalTransfer",
    "file": "backends.transfers.local:LocalTransfer",
    "scp": "backends.transfers.sftp:SFTPTransfer",
    "sftp": "backends.transfers.sftp:SFTPTransfer",
    "http": "backends.transfers.http:HTTPTransfer",
    "https": "backends.transfers.http:HTTPTransfer",
    "gsiftp": "backends.transfers.gridftp:GridFTPTransfer",
    "ftp": "backends.transfers.gridftp:GridFTPTransfer",
}

_IDENTIFIER = r"[A-Za-z_][A-Za-z0-9_]*"
DOTTED_PATH = re.compile(rf"^{_IDENTIFIER}(\.{_IDENTIFIER})*[.:]{_IDENTIFIER}$")


def unknown(field: str, name: str, table: dict[str, str], *, paths: bool = True) -> str | None:
    """Why ``name`` names no plug-in of ``table``, or None when it does or, with ``paths``, is
    a dotted path (imported only when first used: the settings stay fast to load)."""
    if name in table or (paths and DOTTED_PATH.match(name)):
        return None
    known = ", ".join(sorted(table)) + (", or a dotted path to a class" if paths else "")
    return f"unknown {field} {name!r} (known: {known})"


def load(field: str, name: str, table: dict[str, str], base: type[T]) -> type[T]:
    """The class ``name`` stands for, imported now; it must be a ``base``."""
    problem = unknown(field, name, table)
    if problem is not None:
        raise ConfigurationError(f"{field}: {problem}")
    path = table.get(name, name)
    module, sep, attribute = path.partition(":")
    if not sep:
        module, _, attribute = path.rpartition(".")
    try:
        found = getattr(importlib.import_module(module), attribute)
    except (ImportError, AttributeError) as exc:
        raise ConfigurationError(f"{field}: cannot load {path!r}: {exc}") from None
    if not (isinstance(found, type) and issubclass(found, base)):
        raise ConfigurationError(f"{field}: {path!r} is not a {base.__name__} class")
    return found
