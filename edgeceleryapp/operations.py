"""What an operator does to jobs and applications: list, show, alter, remove, retry.

Shared by the command line and the Python API. Retry is the one move that goes back along a
state path, and only out of a failure state, by an explicit request that is recorded as a
JobEvent like any other change.
"""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy import delete, exists, func, select

from edgeceleryapp import states
from edgeceleryapp.db import read_scope, session_scope
from edgeceleryapp.errors import InvalidState, NotFound, ValidationFailed
from edgeceleryapp.models import Application, ArgoJob, JobEvent, SubJob

IN_FLIGHT = ("SUBMITTED", "QUEUED", "RUNNING")
APP_FIELDS = ("description", "executable", "config_script", "preprocess", "postprocess")
ALTERABLE = (
    "name",
    "description",
    "queue",
    "project",
    "wall_time_minutes",
    "num_nodes",
    "processes_per_node",
    "scheduler_config",
    "config_file",
    "input_url",
    "output_url",
)


def _state(machine: states.Machine, name: str) -> str:
    try:
        return machine.normalise(name)
    except ValueError as exc:
        raise ValidationFailed([("--state", str(exc))]) from None


def _check_paths(fields: dict[str, str | None]) -> None:
    errors = [
        (f, "must be an absolute path")
        for f, v in fields.items()
        if f != "description"
        and v is not None
        and not v.startswith("/")
        and (v or f == "executable")
    ]
    if errors:
        raise ValidationFailed(errors)


def _row(obj: Any, fields: tuple[str, ...]) -> dict[str, Any]:
    out = {}
    for f in fields:
        value = getattr(obj, f)
        out[f] = value.isoformat() + "Z" if hasattr(value, "isoformat") else value
    return out


ARGO_COLUMNS = (
    "id",
    "user_id",
    "name",
    "description",
    "group_identifier",
    "username",
    "email",
    "input_url",
    "output_url",
    "job_status_routing_key",
    "state",
    "state_message",
    "current_subjob",
    "num_subjobs",
    "created_at",
    "updated_at",
)
SUBJOB_COLUMNS = (
    "id",
    "argo_job_id",
    "origin_argo_job_id",
    "position",
    "name",
    "description",
    "site",
    "queue",
    "project",
    "wall_time_minutes",
    "num_nodes",
    "processes_per_node",
    "scheduler_config",
    "application",
    "config_file",
    "input_url",
    "output_url",
    "state",
    "state_message",
    "attempt",
    "batch_job_id",
    "exit_code",
    "transfer_bytes",
    "command",
    "created_at",
    "updated_at",
)
EVENT_COLUMNS = ("id", "subjob_id", "from_state", "to_state", "time", "message")
APP_COLUMNS = ("id", "name", "site", *APP_FIELDS)


# --- applications ------------------------------------------------------------------------


def add_app(name: str, site: str, executable: str, **fields: str | None) -> int:
    from edgeceleryapp.settings import get_settings
    from workflows.schemas import NAME_PATTERN

    errors = [
        (f, f"{v!r} is not a valid name")
        for f, v in (("name", name), ("site", site))
        if not re.match(NAME_PATTERN, v)
    ]
    if not errors and site not in get_settings().sites:
        errors.append(("site", f"no site named {site!r} is configured"))
    if errors:
        raise ValidationFailed(errors)
    _check_paths({"executable": executable, **fields})
    with session_scope() as s:
        if s.scalars(
            select(Application).where(Application.name == name, Application.site == site)
        ).first():
            raise ValidationFailed([("name", f"{name!r} is already registered at {site!r}")])
        app = Application(name=name, site=site, executable=executable, **fields)
        s.add(app)
        s.flush()
        return app.id


def list_apps(site: str | None = None) -> list[dict[str, Any]]:
    with read_scope() as s:
        query = select(Application).order_by(Application.site, Application.name)
        if site:
            query = query.where(Application.site == site)
        return [_row(a, APP_COLUMNS) for a in s.scalars(query)]


def _app(s: Any, name: str, site: str) -> Application:
    app = s.scalars(
        select(Application).where(Application.name == name, Application.site == site)
    ).first()
    if app is None:
        raise NotFound(f"no application {name!r} at site {site!r}")
    return app


def alter_app(name: str, site: str, **fields: str | None) -> None:
    changes = {k: v for k, v in fields.items() if v is not None}
    _check_paths(changes)
    with session_scope() as s:
        app = _app(s, name, site)
        for key, value in changes.items():
            setattr(app, key, value or None)


def remove_app(name: str, site: str) -> None:
    with session_scope() as s:
        s.delete(_app(s, name, site))


# --- listing -----------------------------------------------------------------------------


def list_argo(
    state: str | None = None, site: str | None = None, group: str | None = None, limit: int = 100
) -> list[dict[str, Any]]:
    with read_scope() as s:
        query = select(ArgoJob).order_by(ArgoJob.id.desc()).limit(limit)
        if state:
            query = query.where(ArgoJob.state == _state(states.ARGO, state))
        if group:
            query = query.where(ArgoJob.group_identifier == group)
        if site:
            query = query.where(
                exists().where(SubJob.argo_job_id == ArgoJob.id, SubJob.site == site)
            )
        jobs = list(s.scalars(query))
        current = {}
        if jobs:
            for sj in s.scalars(select(SubJob).where(SubJob.argo_job_id.in_([j.id for j in jobs]))):
                current.setdefault(sj.argo_job_id, {})[sj.position] = sj.site
        rows = []
        for job in jobs:
            row = _row(job, ARGO_COLUMNS)
            sites = current.get(job.id, {})
            row["site"] = sites.get(min(job.current_subjob, max(sites, default=0)), "")
            rows.append(row)
        return rows


def show_argo(argo_id: int) -> dict[str, Any]:
    with read_scope() as s:
        job = s.get(ArgoJob, argo_id)
        if job is None:
            raise NotFound(f"no argo job {argo_id}")
        out = _row(job, ARGO_COLUMNS)
        out["subjobs"] = [_row(sj, SUBJOB_COLUMNS) for sj in job.subjobs]
        out["events"] = [
            _row(e, EVENT_COLUMNS)
            for e in s.scalars(
                select(JobEvent).where(JobEvent.argo_job_id == argo_id).order_by(JobEvent.id)
            )
        ]
        return out


def list_subjobs(
    site: str | None = None, state: str | None = None, limit: int = 100
) -> list[dict[str, Any]]:
    with read_scope() as s:
        query = select(SubJob).order_by(SubJob.id.desc()).limit(limit)
        if site:
            query = query.where(SubJob.site == site)
        if state:
            query = query.where(SubJob.state == _state(states.BALSAM, state))
        return [_row(sj, SUBJOB_COLUMNS) for sj in s.scalars(query)]


def show_subjob(subjob_id: int) -> dict[str, Any]:
    with read_scope() as s:
        sj = s.get(SubJob, subjob_id)
        if sj is None:
            raise NotFound(f"no job {subjob_id}")
        out = _row(sj, SUBJOB_COLUMNS)
        out["events"] = [
            _row(e, EVENT_COLUMNS)
            for e in s.scalars(
                select(JobEvent).where(JobEvent.subjob_id == subjob_id).order_by(JobEvent.id)
            )
        ]
        return out


def state_counts() -> dict[str, dict[str, int]]:
    with read_scope() as s:
        rows = s.execute(
            select(SubJob.site, SubJob.state, func.count()).group_by(SubJob.site, SubJob.state)
        )
        out: dict[str, dict[str, int]] = {}
        for site, state, count in rows:
            out.setdefault(site, {})[state] = count
        return out


# --- changes -----------------------------------------------------------------------------


def alter_subjob(subjob_id: int, changes: dict[str, Any]) -> None:
    """Change a job's fields before it runs (or after it failed), validated like a message."""
    from workflows.schemas import BalsamJobMessage
    from workflows.validation import validate

    unknown = [(k, "cannot be altered") for k in changes if k not in ALTERABLE]
    if unknown:
        raise ValidationFailed(unknown)
    with session_scope() as s:
        sj = s.get(SubJob, subjob_id)
        if sj is None:
            raise NotFound(f"no job {subjob_id}")
        if sj.state != "CREATED" and not states.is_failed(sj.state):
            raise InvalidState(
                f"job {subjob_id} is {sj.state}; only CREATED or failed jobs can be altered"
            )
        current = {f: getattr(sj, f) for f in ("name", "site", "application", *ALTERABLE)}
        merged = validate(
            BalsamJobMessage, {k: v for k, v in {**current, **changes}.items() if v is not None}
        )
        for key in changes:
            setattr(sj, key, getattr(merged, key))


def remove_subjobs(ids: list[int], force: bool = False) -> int:
    with session_scope() as s:
        jobs = list(s.scalars(select(SubJob).where(SubJob.id.in_(ids))))
        missing = set(ids) - {j.id for j in jobs}
        if missing:
            raise NotFound(f"no job {', '.join(map(str, sorted(missing)))}")
        for job in jobs:
            if job.argo_job_id is not None:
                raise InvalidState(f"job {job.id} belongs to argo job {job.argo_job_id}")
            if job.state in IN_FLIGHT and not force:
                raise InvalidState(f"job {job.id} has a batch job in flight ({job.state})")
        s.execute(delete(JobEvent).where(JobEvent.subjob_id.in_(ids)))
        s.execute(delete(SubJob).where(SubJob.id.in_(ids)))
        return len(jobs)


def remove_all_subjobs(force: bool = False) -> int:
    with session_scope() as s:
        ids = list(s.scalars(select(SubJob.id).where(SubJob.argo_job_id.is_(None))))
    return remove_subjobs(ids, force=force) if ids else 0


def remove_argo(argo_id: int, force: bool = False) -> None:
    with session_scope() as s:
        job = s.get(ArgoJob, argo_id)
        if job is None:
            raise NotFound(f"no argo job {argo_id}")
        if not force and any(sj.state in IN_FLIGHT for sj in job.subjobs):
            raise InvalidState(f"argo job {argo_id} has a batch job in flight")
        s.execute(delete(JobEvent).where(JobEvent.argo_job_id == argo_id))
        s.delete(job)


def _publish(event_ids: list[int]) -> None:
    """Status messages need kombu, imported here only: listing commands start without it."""
    from edgeceleryapp.status_outbox import publish_events

    publish_events(event_ids)


def _retry_subjob_record(s: Any, sj: SubJob) -> tuple[str, list[JobEvent]]:
    from edgeceleryapp import state_store

    to = states.subjob_retry_state(sj.state)
    values: dict[str, Any] = {"submit_claim": None}
    if states.failed_target(sj.state) in states.BATCH_STATES:
        values.update(attempt=sj.attempt + 1, batch_job_id=None, exit_code=None, submitted_at=None)
    event = state_store.force_subjob(s, sj, to, f"retry requested (from {sj.state})", **values)
    if event is None:
        raise InvalidState(f"job {sj.id} changed while retrying; try again")
    return to, [event]


def _last_failure_origin(s: Any, argo_id: int, failed_state: str) -> str:
    return s.scalars(
        select(JobEvent.from_state)
        .where(
            JobEvent.argo_job_id == argo_id,
            JobEvent.subjob_id.is_(None),
            JobEvent.to_state == failed_state,
        )
        .order_by(JobEvent.id.desc())
        .limit(1)
    ).first()


def retry_argo(argo_id: int) -> str:
    """Put a failed Argo job back where its failed step starts, and run that step again."""
    from edgeceleryapp import state_store
    from workflows import chains

    with session_scope() as s:
        argo = s.get(ArgoJob, argo_id)
        if argo is None:
            raise NotFound(f"no argo job {argo_id}")
        if not states.is_failed(argo.state):
            raise InvalidState(f"argo job {argo_id} is {argo.state}, not in a failure state")
        subjob = argo.subjobs[min(argo.current_subjob, len(argo.subjobs) - 1)]
        events: list[JobEvent] = []
        if states.failed_target(argo.state) in states.ARGO_LOOP and states.is_failed(subjob.state):
            sj_state, events = _retry_subjob_record(s, subjob)
            argo_to = states.argo_state_for_subjob(sj_state)
            follow = "subjob"
        else:
            argo_to = _last_failure_origin(s, argo_id, argo.state) or states.argo_retry_state(
                argo.state
            )
            follow = argo_to
        event = state_store.force_argo(s, argo, argo_to, f"retry requested (from {argo.state})")
        if event is None:
            raise InvalidState(f"argo job {argo_id} changed while retrying; try again")
        events.append(event)
        s.flush()
        ids = [e.id for e in events]
        s.refresh(subjob)
    _publish(ids)
    if follow == "subjob":
        chains.retry_subjob_from(subjob).apply_async()
    elif follow == "CREATED":
        chains.start_argo(argo_id).apply_async()
    elif follow in ("SUBJOBS_COMPLETED", "STAGED_OUT"):
        chains.finish_argo(argo_id).apply_async()
    else:
        chains.advance_argo(argo_id).apply_async()
    return argo_to


def retry_subjob(subjob_id: int) -> str:
    """Retry a failed Balsam-only job from its failed step."""
    from workflows import chains

    with session_scope() as s:
        sj = s.get(SubJob, subjob_id)
        if sj is None:
            raise NotFound(f"no job {subjob_id}")
        if sj.argo_job_id is not None:
            raise InvalidState(f"job {subjob_id} belongs to argo job {sj.argo_job_id}; retry that")
        if not states.is_failed(sj.state):
            raise InvalidState(f"job {subjob_id} is {sj.state}, not in a failure state")
        to, events = _retry_subjob_record(s, sj)
        s.flush()
        ids = [e.id for e in events]
        s.refresh(sj)
    _publish(ids)
    chains.retry_subjob_from(sj).apply_async()
    return to


def _kill(s: Any, argo: ArgoJob | None, subjobs: list[SubJob], why: str) -> list[JobEvent]:
    from edgeceleryapp import state_store

    events = []
    for sj in subjobs:
        if sj.state not in states.BALSAM.terminal:
            event = state_store.force_subjob(s, sj, states.KILLED, why)
            if event is None:
                raise InvalidState(f"job {sj.id} changed while cancelling; try again")
            events.append(event)
    if argo is not None and argo.state not in states.ARGO.terminal:
        event = state_store.force_argo(s, argo, states.KILLED, why)
        if event is None:
            raise InvalidState(f"argo job {argo.id} changed while cancelling; try again")
        events.append(event)
    return events


def _cancel_batch_jobs(subjobs: list[SubJob]) -> None:
    """Send each subjob's site the order to cancel its batch job (chosen before the kill)."""
    from workflows import chains

    for sj in subjobs:
        chains.cancel_batch(sj).apply_async()


def cancel_argo(argo_id: int, why: str = "cancelled by an operator") -> int:
    """Stop an Argo job: its subjobs and the Argo job end KILLED, batch jobs are removed.

    Returns how many batch jobs were asked to go. The chain stops by itself: every step finds
    its record KILLED and ends it.
    """
    with session_scope() as s:
        argo = s.get(ArgoJob, argo_id)
        if argo is None:
            raise NotFound(f"no argo job {argo_id}")
        if argo.state in states.ARGO.terminal:
            raise InvalidState(f"argo job {argo_id} has already ended ({argo.state})")
        subjobs = list(argo.subjobs)
        in_flight = [sj for sj in subjobs if sj.batch_job_id and sj.state in IN_FLIGHT]
        events = _kill(s, argo, subjobs, why)
        s.flush()
        ids = [e.id for e in events]
    _publish(ids)
    _cancel_batch_jobs(in_flight)
    return len(in_flight)


def kill_subjob(subjob_id: int, why: str = "killed by an operator") -> int:
    """Kill one job; a subjob's Argo job is killed with it (the chain cannot go on)."""
    with session_scope() as s:
        sj = s.get(SubJob, subjob_id)
        if sj is None:
            raise NotFound(f"no job {subjob_id}")
        if sj.state in states.BALSAM.terminal:
            raise InvalidState(f"job {subjob_id} has already ended ({sj.state})")
        in_flight = [sj] if sj.batch_job_id and sj.state in IN_FLIGHT else []
        argo = s.get(ArgoJob, sj.argo_job_id) if sj.argo_job_id is not None else None
        events = _kill(s, argo, [sj], why)
        s.flush()
        ids = [e.id for e in events]
    _publish(ids)
    _cancel_batch_jobs(in_flight)
    return len(in_flight)


def set_argo_state(argo_id: int, to: str, who: str) -> str:
    """An operator sets an Argo job's state by hand (seed 000 Figure 6); returns the state.

    KILLED is a cancel (batch jobs are removed, subjobs end KILLED). Any other state only
    corrects the record of a job whose chain has stopped (ended or failed): a running chain
    moves its own job, and a hand-set state would race it. Recorded and published like every
    change.
    """
    from edgeceleryapp import state_store

    target = _state(states.ARGO, to)
    if target == states.KILLED:
        cancel_argo(argo_id, why=f"killed by {who}")
        return target
    with session_scope() as s:
        argo = s.get(ArgoJob, argo_id)
        if argo is None:
            raise NotFound(f"no argo job {argo_id}")
        if argo.state == target:
            raise InvalidState(f"argo job {argo_id} is already {target}")
        if argo.state not in states.ARGO.terminal and not states.is_failed(argo.state):
            raise InvalidState(
                f"argo job {argo_id} is {argo.state} and its chain is running; cancel it first"
            )
        event = state_store.force_argo(s, argo, target, f"state set to {target} by {who}")
        if event is None:
            raise InvalidState(f"argo job {argo_id} changed meanwhile; try again")
        s.flush()
        ids = [event.id]
    _publish(ids)
    return target
