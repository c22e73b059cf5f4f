"""What an operator does to jobs: alter, remove, retry, cancel, kill, set a state by hand.

Shared by the command line, the Python API and the job browser. Every change goes through
``edgeceleryapp.state_store`` (recorded as a JobEvent, published after the commit); what a
retried job is owed next comes from ``edgeceleryapp.next_step``. Retry is the one move that goes
back along a state path, and only out of a failure state, by an explicit request.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, select

from edgeceleryapp import next_step, site_handoff, state_store, states
from edgeceleryapp.db import session_scope
from edgeceleryapp.errors import InvalidState, NotFound, ValidationFailed
from edgeceleryapp.job_views import found, state_named
from edgeceleryapp.models import ArgoJob, JobEvent, SubJob, SubjobParent
from edgeceleryapp.state_store import StateWriter


def _alterable() -> tuple[str, ...]:
    """A job's own settings: the fields of its message, less where it runs and what."""
    from workflows.schemas import BalsamJobMessage  # pydantic: loaded only when altering

    fixed = ("site", "application", "argo_job_id", "parents")
    return tuple(f for f in BalsamJobMessage.model_fields if f not in fixed)


def alter_subjob(subjob_id: int, changes: dict[str, Any]) -> None:
    """Change a job's fields before it runs (or after it failed), validated like a message."""
    from workflows.intake import url_errors
    from workflows.schemas import BalsamJobMessage  # pydantic: loaded only when altering
    from workflows.validation import validate

    alterable = _alterable()
    unknown = [(k, "cannot be altered") for k in changes if k not in alterable]
    if unknown:
        raise ValidationFailed(unknown)
    with session_scope() as s:
        sj = found(s, SubJob, subjob_id)
        if sj.state != "CREATED" and not states.is_failed(sj.state):
            raise InvalidState(
                f"job {subjob_id} is {sj.state}; only CREATED or failed jobs can be altered"
            )
        current = {f: getattr(sj, f) for f in ("site", "application", *alterable)}
        merged = validate(
            BalsamJobMessage, {k: v for k, v in {**current, **changes}.items() if v is not None}
        )
        urls = [(k, changes[k], sj.site) for k in ("input_url", "output_url") if changes.get(k)]
        if errors := url_errors(urls, sj.argo_job_id):
            raise ValidationFailed(errors)
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
            if _with_batch_job([job]) and not force:
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
        job = found(s, ArgoJob, argo_id)
        if not force and _with_batch_job(list(job.subjobs)):
            raise InvalidState(f"argo job {argo_id} has a batch job in flight")
        s.execute(delete(JobEvent).where(JobEvent.argo_job_id == argo_id))
        s.execute(delete(SubjobParent).where(SubjobParent.argo_job_id == argo_id))
        s.delete(job)


def _force_subjob(
    tx: StateWriter, sj: SubJob, to: str, why: str, doing: str, **values: Any
) -> None:
    if not tx.force_subjob(sj.id, sj.state, to, why, **values):
        raise InvalidState(f"job {sj.id} changed while {doing}; try again")


def _force_argo(tx: StateWriter, argo: ArgoJob, to: str, why: str, doing: str) -> None:
    if not tx.force_argo(argo.id, argo.state, to, why):
        raise InvalidState(f"argo job {argo.id} changed while {doing}; try again")


def _retry_note(state: str, who: str) -> str:
    return f"retry requested{f' by {who}' if who else ''} (from {state})"


def _retry_subjob_record(tx: StateWriter, sj: SubJob, who: str = "") -> str:
    to = states.subjob_retry_state(sj.state)
    values: dict[str, Any] = {"submit_claim": None}
    if states.failed_target(sj.state) in states.BATCH_STATES:
        values.update(attempt=sj.attempt + 1, batch_job_id=None, exit_code=None, submitted_at=None)
    _force_subjob(tx, sj, to, _retry_note(sj.state, who), "retrying", **values)
    return to


def _last_failure_origin(s: Any, argo_id: int, failed_state: str) -> str | None:
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


def _send_owed(owed: next_step.Owed, sites: list[str] | None = None) -> None:
    """Send what is owed; a subjob naming candidate ``sites`` to the site chosen for it
    (chosen now if its first run never went out)."""
    from workflows import chains  # kombu and Celery: loaded only when a chain is sent

    if owed.verdict == next_step.STEP:
        chains.send(chains.chain_for(site_handoff.placed(owed, sites)))


def retry_argo(argo_id: int, who: str = "") -> str:
    """Put a failed Argo job back where its failed step starts, and send what it is owed.
    ``who`` asked for it, for the record (the job browser names its user)."""
    with state_store.transaction(operator=True) as tx:
        s = tx.session
        argo = found(s, ArgoJob, argo_id)
        if not states.is_failed(argo.state):
            raise InvalidState(f"argo job {argo_id} is {argo.state}, not in a failure state")
        subjobs = list(argo.subjobs)
        sites: list[str] | None = None  # the current subjob's candidates (a linear job)
        if argo.graph and argo.state == states.failed("SUBJOBS_COMPLETED"):
            owed_runs = _retry_graph(tx, argo, subjobs, who)
            argo_to = states.GRAPH_RUNNING
            _force_argo(tx, argo, argo_to, _retry_note(argo.state, who), "retrying")
        else:
            argo_to = _retry_linear(tx, argo, subjobs, who)
            s.expire_all()
            current = argo.current_subjob
            at = subjobs[current] if current < len(subjobs) else None
            owed_runs = [next_step.for_argo(argo, at)]
            sites = at.sites if at is not None else None
    for owed in owed_runs:
        _send_owed(owed, sites)
    return argo_to


def _retry_linear(tx: StateWriter, argo: ArgoJob, subjobs: list[SubJob], who: str) -> str:
    """The current subjob back where its failed step starts (a failure in the SUBJOB_* loop),
    or the Argo job back where its own failed step starts; the Argo state it goes to."""
    subjob = subjobs[min(argo.current_subjob, len(subjobs) - 1)]
    if states.failed_target(argo.state) in states.ARGO_LOOP and states.is_failed(subjob.state):
        argo_to = states.argo_state_for_subjob(_retry_subjob_record(tx, subjob, who))
    else:
        argo_to = _last_failure_origin(tx.session, argo.id, argo.state) or states.argo_retry_state(
            argo.state, bool(argo.graph)
        )
    _force_argo(tx, argo, argo_to, _retry_note(argo.state, who), "retrying")
    return argo_to


def _retry_graph(
    tx: StateWriter, argo: ArgoJob, subjobs: list[SubJob], who: str
) -> list[next_step.Owed]:
    """A failed graph job: each failed subjob goes back where its failed step starts, each
    BLOCKED one back to CREATED (it waits for its parents again); finished ones keep their
    records. What is owed after: the runs of those past CREATED, and an argo.advance that
    sends every ready one."""
    owed: list[next_step.Owed] = []
    retried = 0
    for sj in subjobs:
        if states.is_failed(sj.state):
            to = _retry_subjob_record(tx, sj, who)
            if to != "CREATED":
                record = next_step.Record(sj.id, to, sj.site, argo.id)
                owed.append(next_step.for_graph_subjob(states.GRAPH_RUNNING, record, 0))
            retried += 1
        elif sj.state == states.BLOCKED:
            _force_subjob(tx, sj, "CREATED", _retry_note(sj.state, who), "retrying")
            retried += 1
    tx.stuck_released(argo.id, retried)
    owed.append(next_step.Owed(next_step.STEP, (next_step.ADVANCE,), argo_id=argo.id))
    return owed


def retry_subjob(subjob_id: int) -> str:
    """Retry a failed Balsam-only job from its failed step."""
    with state_store.transaction(operator=True) as tx:
        sj = found(tx.session, SubJob, subjob_id)
        if sj.argo_job_id is not None:
            raise InvalidState(f"job {subjob_id} belongs to argo job {sj.argo_job_id}; retry that")
        if not states.is_failed(sj.state):
            raise InvalidState(f"job {subjob_id} is {sj.state}, not in a failure state")
        to = _retry_subjob_record(tx, sj)
        tx.session.expire_all()
        owed, sites = next_step.for_subjob(sj), sj.sites
    _send_owed(owed, sites)
    return to


def _kill(tx: StateWriter, argo: ArgoJob | None, subjobs: list[SubJob], why: str) -> None:
    for sj in subjobs:
        if sj.state not in states.BALSAM.terminal:
            _force_subjob(tx, sj, states.KILLED, why, "cancelling")
    if argo is not None and argo.state not in states.ARGO.terminal:
        _force_argo(tx, argo, states.KILLED, why, "cancelling")


def _cancel_batch_jobs(subjobs: list[SubJob]) -> None:
    """Send each subjob's site the order to cancel its batch job (chosen before the kill)."""
    from workflows import chains  # kombu and Celery: loaded only when a chain is sent

    for sj in subjobs:
        chains.cancel_batch(sj).apply_async()


def _with_batch_job(subjobs: list[SubJob]) -> list[SubJob]:
    """The subjobs that have, or may have, a batch job: one in flight, or one being submitted
    (PREPROCESSED with a submit claim: the scheduler may have answered before the submit
    could record it, or its worker died there). The site looks the second kind up by name;
    a submit that records nothing because of the kill cancels its own batch job. A subjob
    assigned to a pilot has its run stopped inside the pilot."""
    return [
        sj
        for sj in subjobs
        if ((sj.batch_job_id or sj.pilot_id) and sj.state in states.IN_FLIGHT)
        or (sj.state == "PREPROCESSED" and sj.submit_claim is not None)
    ]


def cancel_argo(argo_id: int, why: str = "cancelled by an operator") -> int:
    """Stop an Argo job: its subjobs and the Argo job end KILLED, batch jobs are removed.

    Returns how many batch jobs were asked to go. The chain stops by itself: every step finds
    its record KILLED and ends it.
    """
    with state_store.transaction(operator=True) as tx:
        argo = found(tx.session, ArgoJob, argo_id)
        if argo.state in states.ARGO.terminal:
            raise InvalidState(f"argo job {argo_id} has already ended ({argo.state})")
        subjobs = list(argo.subjobs)
        with_batch_job = _with_batch_job(subjobs)
        _kill(tx, argo, subjobs, why)
    _cancel_batch_jobs(with_batch_job)
    return len(with_batch_job)


def kill_subjob(subjob_id: int, why: str = "killed by an operator") -> int:
    """Kill one job; a subjob's Argo job is killed with it (the chain cannot go on)."""
    with state_store.transaction(operator=True) as tx:
        sj = found(tx.session, SubJob, subjob_id)
        if sj.state in states.BALSAM.terminal:
            raise InvalidState(f"job {subjob_id} has already ended ({sj.state})")
        with_batch_job = _with_batch_job([sj])
        argo = tx.session.get(ArgoJob, sj.argo_job_id) if sj.argo_job_id is not None else None
        _kill(tx, argo, [sj], why)
    _cancel_batch_jobs(with_batch_job)
    return len(with_batch_job)


def set_argo_state(argo_id: int, to: str, who: str) -> str:
    """An operator sets an Argo job's state by hand (the HUST'17 paper's Figure 6); returns
    the state.

    KILLED is a cancel (batch jobs are removed, subjobs end KILLED). Any other state only
    corrects the record of a job whose chain has stopped (ended or failed): a running chain
    moves its own job, and a hand-set state would race it. Recorded and published like every
    change.
    """
    target = state_named(states.ARGO, to)
    if target == states.KILLED:
        cancel_argo(argo_id, why=f"killed by {who}")
        return target
    with state_store.transaction(operator=True) as tx:
        argo = found(tx.session, ArgoJob, argo_id)
        if argo.state == target:
            raise InvalidState(f"argo job {argo_id} is already {target}")
        if argo.state not in states.ARGO.terminal and not states.is_failed(argo.state):
            raise InvalidState(
                f"argo job {argo_id} is {argo.state} and its chain is running; cancel it first"
            )
        if not tx.force_argo(argo.id, argo.state, target, f"state set to {target} by {who}"):
            raise InvalidState(f"argo job {argo_id} changed meanwhile; try again")
    return target
