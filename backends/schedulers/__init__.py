"""Batch scheduler plug-ins, picked by the site's ``scheduler`` setting (a name in
``backends.registry.SCHEDULERS`` or a dotted path to a site's own class)."""

from __future__ import annotations

from backends import registry
from backends.runners import runner_for
from backends.schedulers.base import BatchRequest, BatchStatus, Scheduler
from edgeceleryapp.settings import SiteSettings

SCHEDULERS = registry.SCHEDULERS


def scheduler_for(site: SiteSettings) -> Scheduler:
    cls = registry.load("scheduler", site.scheduler, SCHEDULERS, Scheduler)
    return cls(site, runner_for(site))


__all__ = ["SCHEDULERS", "BatchRequest", "BatchStatus", "Scheduler", "scheduler_for"]
