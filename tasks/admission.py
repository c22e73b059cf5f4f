"""Admission: the site's tick lets waiting subjobs submit, oldest first, when the site may take
them (aCT's queue limit, the circuit breaker; edgeceleryapp/throttle.py).

A subjob the site may not take yet is parked (``SubJob.waiting_since``, set by
``site_steps.claim_submission``): it has no message, so a queue 100,000 deep costs the broker
nothing and the database one indexed read of the next few per tick. Each admitted subjob gets
its ``site.submit`` message; the claim still checks the policy, so a subjob admitted in a race
parks again.
"""

from __future__ import annotations

from sqlalchemy import bindparam, func, select, update

from edgeceleryapp import next_step, states
from edgeceleryapp.brokertransport import batch_producer
from edgeceleryapp.db import engine, read_connection
from edgeceleryapp.models import SiteMonitor, SubJob, utcnow
from edgeceleryapp.settings import SiteSettings, get_settings
from edgeceleryapp.throttle import QueuePolicy
from tasks import pilots
from workflows.chains import chain_for, send

_SUB = SubJob.__table__
# Jobs the site's scheduler holds for us, by state; then those it is about to get: subjobs not
# parked that hold a claim, or were admitted and have yet to claim (their site.submit is on its
# way). Without the latter, every tick before those messages ran admitted more, which parked
# again (bench/deep_queue.py). Neither query reads the parked subjobs.
_IN_FLIGHT = (
    select(_SUB.c.state, func.count())
    .where(_SUB.c.site == bindparam("site"), _SUB.c.state.in_(states.IN_FLIGHT))
    .group_by(_SUB.c.state)
)
_COMING = select(func.count()).where(
    _SUB.c.site == bindparam("site"),
    _SUB.c.state == "PREPROCESSED",
    _SUB.c.waiting_since.is_(None),
    _SUB.c.submit_claim.is_not(None) | _SUB.c.dispatched_at.is_not(None),
)
_NEXT_WAITING = (
    select(_SUB.c.id, _SUB.c.site, _SUB.c.argo_job_id, _SUB.c.state)
    .where(
        _SUB.c.site == bindparam("site"),
        _SUB.c.state == "PREPROCESSED",
        _SUB.c.waiting_since.is_not(None),
    )
    .order_by(_SUB.c.id)
    .limit(bindparam("slots"))
)
_ADMITTED = (
    update(_SUB)
    .where(
        _SUB.c.id.in_(bindparam("ids", expanding=True)),
        _SUB.c.state == "PREPROCESSED",
        _SUB.c.waiting_since.is_not(None),
    )
    .values(waiting_since=None, dispatched_at=bindparam("now"))
    .returning(_SUB.c.id)
)
_BREAKER = select(SiteMonitor.breaker_until).where(SiteMonitor.site == bindparam("site"))


def slots(site_name: str, site: SiteSettings) -> int:
    """How many waiting subjobs the site may take now."""
    now = utcnow()
    with read_connection() as conn:
        resting = conn.execute(_BREAKER, {"site": site_name}).scalar()
        occupied = dict(conn.execute(_IN_FLIGHT, {"site": site_name}).all())
        coming = conn.execute(_COMING, {"site": site_name}).scalar_one()
    if resting is not None:
        return 0 if resting > now else 1  # after the cool-down, one probe decides
    running = occupied.get("RUNNING", 0)
    queued = sum(occupied.values()) - running + coming
    free = QueuePolicy(site.max_queued, site.queued_per_running, site.queued_base).free(
        running, queued
    )
    return get_settings().redrive_batch if free is None else free


def admit(site_name: str, site: SiteSettings) -> list[int]:
    """Send ``site.submit`` to the oldest waiting subjobs that fit; their ids."""
    if site.pilots.enabled:  # subjobs wait for pilots: the tick assigns them
        return pilots.assign(site_name, site)
    room = slots(site_name, site)
    if room <= 0:
        return []
    with read_connection() as conn:
        waiting = conn.execute(_NEXT_WAITING, {"site": site_name, "slots": room}).all()
    if not waiting:
        return []
    with engine().begin() as conn:
        params = {"ids": [row.id for row in waiting], "now": utcnow()}
        admitted = set(conn.execute(_ADMITTED, params).scalars())
    with batch_producer(get_settings().broker_url) as producer:
        for row in waiting:
            if row.id in admitted:
                owed = next_step.for_subjob(
                    next_step.Record(row.id, row.state, row.site, row.argo_job_id)
                )
                send(chain_for(owed), producer)
    return sorted(admitted)
