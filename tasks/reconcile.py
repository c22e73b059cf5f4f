"""The reconciler: the database drives, messages carry work. A record whose owed step made no
progress for ``redrive_after`` seconds (its message lost with a broker that restarted empty, a
worker killed with its task, a retry whose ETA message vanished) gets that step sent again,
with the rest of its chain (``edgeceleryapp.next_step``).

A sweep looks only at records resting where a step is owed: not ended, not parked (a batch job
in flight, a wait for admission), with no live lease (``edgeceleryapp.leases``: an execution
at work renews its lease), untouched for the grace period (no move, no message due). Oldest
first, at most ``redrive_batch`` per sweep; each re-drive is recorded as a JobEvent that keeps
the state and says why. Sites' records are swept by their site's tick (``tasks.poll``), Argo
jobs' by the argo worker (``argo.reconcile`` on celery beat), which also sweeps the hand-offs
to candidate sites that were never made (the sites' sweeps leave those alone, so one sweep
sends each); each sweep is single-flight through a lease in ``site_monitors``.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Row, Select, Table, Text, and_, bindparam, cast, func, not_, or_, select

from edgeceleryapp import next_step, site_handoff, state_store, states
from edgeceleryapp.brokertransport import batch_producer
from edgeceleryapp.db import read_connection
from edgeceleryapp.models import ArgoJob, SubJob, utcnow
from edgeceleryapp.next_step import Owed
from edgeceleryapp.settings import get_settings
from workflows.chains import chain_for, send

log = logging.getLogger(__name__)

_SUB = SubJob.__table__
_ARGO = ArgoJob.__table__
# The site_monitors row whose lease makes the Argo sweep single-flight (no site is named so).
ARGO_SWEEP = "_argo"


def _stale(table: Table) -> list:  # type: ignore[type-arg]
    c = table.c
    return [
        or_(c.lease_until.is_(None), c.lease_until < bindparam("now")),
        c.updated_at < bindparam("cutoff"),
        or_(c.dispatched_at.is_(None), c.dispatched_at < bindparam("cutoff")),
    ]


def _subjob_candidates(*where: Any) -> Select:  # type: ignore[type-arg]
    """Subjobs resting where a step is owed, made no progress, and ``where``."""
    return (
        select(
            _SUB.c.id,
            _SUB.c.site,
            _SUB.c.state,
            _SUB.c.argo_job_id,
            _SUB.c.waiting_since,
            _SUB.c.updated_at,
            _SUB.c.dispatched_at,
            _SUB.c.parents_left,
            _SUB.c.sites,
            _ARGO.c.state.label("argo_state"),
            _ARGO.c.current_subjob,
        )
        .select_from(_SUB.outerjoin(_ARGO, _ARGO.c.id == _SUB.c.argo_job_id))
        .where(
            *where,
            _SUB.c.state.in_(next_step.SITE_STEP_STARTS),
            _SUB.c.waiting_since.is_(None),
            *_stale(_SUB),
            # A subjob of an Argo job starts only when the Argo job hands it over; in a graph
            # job, when its parents have all finished.
            or_(
                _SUB.c.argo_job_id.is_(None),
                _SUB.c.state != "CREATED",
                and_(
                    _ARGO.c.state == "SUBJOB_SUBMITTED",
                    _ARGO.c.current_subjob == _SUB.c.position,
                ),
                and_(_ARGO.c.state == states.GRAPH_RUNNING, _SUB.c.parents_left == 0),
            ),
        )
        .order_by(_SUB.c.id)
        .limit(bindparam("cap"))
    )


# Hand-offs whose site was never chosen (their message lost before the choice): ``site`` is
# still the first candidate, whose worker may be the one that is down, so the argo worker,
# which makes hand-offs, sweeps them, and the sites' sweeps leave them alone. A subjob of one
# site stores ``sites`` as JSON null, or SQL NULL in a row older than the column (and
# PostgreSQL's json has no equality), hence the text.
_UNCHOSEN_HANDOFF = and_(
    _SUB.c.state == "CREATED",
    _SUB.c.site_chosen_at.is_(None),
    func.coalesce(cast(_SUB.c.sites, Text), "null") != "null",
)
_SITE_CANDIDATES = _subjob_candidates(_SUB.c.site == bindparam("site"), not_(_UNCHOSEN_HANDOFF))
_UNCHOSEN = _subjob_candidates(_UNCHOSEN_HANDOFF)
_ARGO_CANDIDATES = (
    select(
        _ARGO.c.id, _ARGO.c.state, _ARGO.c.current_subjob, _ARGO.c.updated_at, _ARGO.c.dispatched_at
    )
    .where(_ARGO.c.state.in_(next_step.ARGO_STEP_STARTS), *_stale(_ARGO))
    .order_by(_ARGO.c.id)
    .limit(bindparam("cap"))
)


def sweep_period() -> float:
    """How often a sweep runs: often enough that a record waits little past redrive_after."""
    return get_settings().redrive_after / 4


def _params(now: datetime) -> dict:
    settings = get_settings()
    cutoff = now - timedelta(seconds=settings.redrive_after)
    return {"now": now, "cutoff": cutoff, "cap": settings.redrive_batch}


def _idle_for(row: Row, now: datetime) -> int:
    last = max(t for t in (row.updated_at, row.dispatched_at) if t is not None)
    return int((now - last).total_seconds())


def _redrive(table: Table, chosen: list[tuple[Row, Owed]], now: datetime) -> list[int]:
    """Record each re-drive, then send the owed chains in one broker round trip."""
    sent: list[tuple[Row, Owed]] = []
    for row, owed in chosen:
        why = f"re-driven: no progress for {_idle_for(row, now)} s; sending {owed.step} again"
        with state_store.transaction() as tx:
            if tx.redriven(table, row.id, row.state, why):
                sent.append((row, owed))
    if sent:
        with batch_producer(get_settings().broker_url) as producer:
            for _, owed in sent:
                send(chain_for(owed), producer)
        log.info("re-drove %d records: %s", len(sent), [row.id for row, _ in sent])
    return [row.id for row, _ in sent]


def reconcile_site(site_name: str) -> list[int]:
    """Re-drive the site's subjobs whose owed step made no progress; their ids."""
    return _redrive_subjobs(_SITE_CANDIDATES, {"site": site_name})


def reconcile_handoffs() -> list[int]:
    """Re-drive the hand-offs to candidate sites that were never made (the choice is made
    now, at the site the rule picks); their ids."""
    return _redrive_subjobs(_UNCHOSEN, {})


def _redrive_subjobs(query: Select, params: dict) -> list[int]:  # type: ignore[type-arg]
    now = utcnow()
    with read_connection() as conn:
        rows = conn.execute(query, {**params, **_params(now)}).all()
    chosen = []
    for row in rows:
        subjob = next_step.Record(
            row.id, row.state, row.site, row.argo_job_id, waiting_since=row.waiting_since
        )
        if row.argo_job_id is None:
            owed = next_step.for_subjob(subjob)
        elif row.parents_left is not None:
            owed = next_step.for_graph_subjob(row.argo_state, subjob, row.parents_left)
        else:
            argo = next_step.Record(
                row.argo_job_id, row.argo_state, current_subjob=row.current_subjob
            )
            owed = next_step.for_argo(argo, subjob)
        if owed.verdict == next_step.STEP and owed.subjob_id == row.id:
            chosen.append((row, site_handoff.placed(owed, row.sites)))
    return _redrive(_SUB, chosen, now)


def reconcile_argo() -> list[int]:
    """Re-drive the Argo jobs whose own owed step (not a subjob's) made no progress."""
    now = utcnow()
    with read_connection() as conn:
        rows = conn.execute(_ARGO_CANDIDATES, _params(now)).all()
    chosen = []
    for row in rows:
        owed = next_step.for_argo(row, None)
        if owed.verdict == next_step.STEP and owed.step.startswith("argo."):
            chosen.append((row, owed))
    return _redrive(_ARGO, chosen, now)
