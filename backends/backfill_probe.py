"""Asking a site's scheduler for its backfill windows, on the site's own runner (SSH for a
remote login node), at the site's tick.

The answer only makes a pilot's shape better, so asking can never fail the tick: a scheduler
that is busy, slow or unreadable gives no information this time (``Probe.windows`` None,
``Probe.error`` the typed error, ``TransientError`` or ``PermanentError``, for the site's
page and the log), and the sizer keeps its default.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from backends.backfill import Window
from backends.schedulers import Scheduler, scheduler_for
from edgeceleryapp.errors import EdgeCeleryError
from edgeceleryapp.settings import SiteSettings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Probe:
    """The windows (None: no information) and, when asking failed, why."""

    windows: list[Window] | None
    error: EdgeCeleryError | None = None


def probe(name: str, site: SiteSettings, scheduler: Scheduler | None = None) -> Probe:
    """Site ``name``'s backfill windows now; ``scheduler`` its plug-in when the caller holds
    one already."""
    try:
        return Probe((scheduler or scheduler_for(site)).windows())
    except EdgeCeleryError as exc:
        log.warning("backfill windows of site %s unknown this time: %s", name, exc)
        return Probe(None, exc)
