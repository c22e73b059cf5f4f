"""Command runners: where a scheduler plug-in's commands run (this host, or a login node)."""

from __future__ import annotations

from backends.runners.base import CommandResult, Runner
from backends.runners.local import LocalRunner
from backends.runners.ssh import SSHRunner
from edgeceleryapp.errors import ConfigurationError
from edgeceleryapp.settings import SiteSettings

RUNNERS: dict[str, type[Runner]] = {"local": LocalRunner, "ssh": SSHRunner}


def runner_for(site: SiteSettings) -> Runner:
    try:
        return RUNNERS[site.runner](site)
    except KeyError:
        raise ConfigurationError(
            f"runner: unknown runner {site.runner!r} (known: {', '.join(sorted(RUNNERS))})"
        ) from None


__all__ = ["RUNNERS", "CommandResult", "Runner", "runner_for"]
