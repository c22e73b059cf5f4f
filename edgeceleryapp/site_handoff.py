"""The hand-off of a subjob that names candidate sites: read what each candidate can do now,
apply the rule (``edgeceleryapp.site_choice``), record the choice and its reason, and send the
subjob's first run to the chosen site.

Every path that sends a subjob's first run (``site.stage_in``) passes its answer through
``placed``: argo.advance for a linear job, the graph's ready subjobs, a Balsam-only job at
intake, the site sweep re-driving a lost hand-off. The choice is made once
(``state_store.choose_site``, a compare-and-set): a hand-off that runs twice, or a retry,
keeps the first choice. A subjob with one ``site`` costs nothing here: its row says so.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime

from sqlalchemy import bindparam, select

from edgeceleryapp import next_step, site_health, state_store
from edgeceleryapp.db import read_scope
from edgeceleryapp.models import Application, SiteMonitor, SubJob, utcnow
from edgeceleryapp.settings import get_settings
from edgeceleryapp.site_choice import Candidate, best_window, choose
from edgeceleryapp.site_monitor import recent_windows

FIRST_RUN = "site.stage_in"

_SUB = SubJob.__table__
_LOAD = select(
    _SUB.c.site,
    _SUB.c.sites,
    _SUB.c.site_chosen_at,
    _SUB.c.application,
    _SUB.c.num_nodes,
    _SUB.c.wall_time_minutes,
).where(_SUB.c.id == bindparam("subjob_id"))
_REGISTERED = select(Application.site).where(
    Application.name == bindparam("application"),
    Application.site.in_(bindparam("sites", expanding=True)),
)


def snapshot(
    sites: list[str],
    application: str,
    now: datetime,
    shape: tuple[int, float | None] = (1, None),
) -> list[Candidate]:
    """What each candidate site can do now, read in one place: the whitelist, the workers'
    heartbeat, the breaker, the queue against its limit (as ``edgecelery site show`` reads
    them), and the idle nodes its scheduler reported: of the windows the site's worker last
    saw, while fresh (two status intervals), the one that speaks for a subjob of ``shape``
    (nodes, wall seconds)."""
    configured = get_settings().sites
    with read_scope() as s:
        registered = set(s.scalars(_REGISTERED, {"application": application, "sites": sites}).all())
        candidates = []
        for name in sites:
            site = configured.get(name)
            if site is None:  # removed from the settings since intake: never chosen
                candidates.append(Candidate(name, False, False, False, 0))
                continue
            row = s.get(SiteMonitor, name)
            counts = site_health.admission(s, name, site)
            limit = counts["limit"]
            candidates.append(
                Candidate(
                    site=name,
                    registered=name in registered,
                    worker_alive=site_health.worker_alive(row, site, now),
                    breaker_open=row is not None
                    and row.breaker_until is not None
                    and row.breaker_until > now,
                    free_slots=None if limit is None else max(0, limit - counts["queued"]),
                    queued=counts["queued"],
                    limit=limit,
                    waiting=counts["waiting_for_admission"],
                    window=best_window(recent_windows(row, 2 * site.status_interval, now), *shape),
                )
            )
    return candidates


def placed(owed: next_step.Owed, sites: list[str] | None) -> next_step.Owed:
    """``owed`` sent where it belongs: for the first run of a subjob naming candidate
    ``sites``, at the site chosen for it (chosen now if it has not been); otherwise as it is."""
    if not sites or owed.step != FIRST_RUN or owed.subjob_id is None:
        return owed
    with read_scope() as s:
        row = s.execute(_LOAD, {"subjob_id": owed.subjob_id}).first()
    if row is None or row.sites is None:
        return owed
    site = row.site
    if row.site_chosen_at is None:
        wall = row.wall_time_minutes * 60 if row.wall_time_minutes is not None else None
        candidates = snapshot(
            list(row.sites), row.application, utcnow(), shape=(row.num_nodes, wall)
        )
        choice = choose(candidates, row.num_nodes, wall)
        site = state_store.choose_site(owed.subjob_id, choice.site, choice.reason) or site
    return dataclasses.replace(owed, site=site)
