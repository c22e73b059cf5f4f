"""Command runners: where a scheduler plug-in's commands run (this host, or a login node),
picked by the site's ``runner`` setting."""

from __future__ import annotations

from backends import registry
from backends.runners.base import CommandResult, Runner
from edgeceleryapp.settings import SiteSettings

RUNNERS = registry.RUNNERS


def runner_for(site: SiteSettings) -> Runner:
    return registry.load("runner", site.runner, RUNNERS, Runner)(site)


__all__ = ["RUNNERS", "CommandResult", "Runner", "runner_for"]
