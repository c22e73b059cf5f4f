"""State changes as compare-and-set, with their JobEvents and the Argo mirror, in one commit.

``UPDATE ... WHERE id = :id AND state = :expected``: zero rows means another worker got there
first, and the caller does nothing more. A subjob's change moves its Argo job along in the same
transaction (seed 000 2.2.1: the Argo job follows its current subjob), so the two never
disagree. Status messages go out after the commit.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from edgeceleryapp import states
from edgeceleryapp.db import read_scope, session_scope
from edgeceleryapp.models import ArgoJob, JobEvent, SubJob, utcnow
from edgeceleryapp.status import body, routing_key, send


class _LostRace(Exception):
    """Raised inside a transaction to roll it back when a compare-and-set finds another state."""


def _storable(message: str) -> str:
    """A reason often quotes outside output (a script's stderr, a scheduler's answer), which
    may hold NUL bytes; PostgreSQL text cannot, and the failure must still be recorded."""
    return message.replace("\x00", "\ufffd")


def _cas(session: Session, model: type, ident: int, expected: str, to: str, values: dict) -> bool:
    result = session.execute(
        update(model)
        .where(model.id == ident, model.state == expected)
        .values(state=to, updated_at=utcnow(), **values)
    )
    return result.rowcount == 1


def _event(
    session: Session, argo_id: int | None, subjob_id: int | None, frm: str, to: str, message: str
) -> JobEvent:
    event = JobEvent(
        argo_job_id=argo_id, subjob_id=subjob_id, from_state=frm, to_state=to, message=message
    )
    session.add(event)
    return event


def _mirror(session: Session, subjob: SubJob, frm: str, to: str, message: str) -> list[JobEvent]:
    """Move the Argo job to the state that reflects its current subjob's change."""
    if subjob.argo_job_id is None:
        return []
    expected = states.argo_state_for_subjob(frm)
    if states.is_failed(to):
        target = states.argo_failure_for(expected)
    elif to in states.ARGO_MIRROR:
        target = states.ARGO_MIRROR[to]
    else:
        return []
    result = session.execute(
        update(ArgoJob)
        .where(
            ArgoJob.id == subjob.argo_job_id,
            ArgoJob.state == expected,
            ArgoJob.current_subjob == subjob.position,
        )
        .values(
            state=target,
            updated_at=utcnow(),
            state_message=message if states.is_failed(target) else "",
        )
    )
    if result.rowcount != 1:
        return []
    note = f"subjob {subjob.id} at {subjob.site}: {to}" + (f": {message}" if message else "")
    return [_event(session, subjob.argo_job_id, None, expected, target, note)]


def _argo_labels(session: Session, argo_id: int | None) -> tuple[str, str | None]:
    """The Argo job's name and status routing key, for the status messages of this change."""
    if argo_id is None:
        return "", None
    row = session.execute(
        select(ArgoJob.name, ArgoJob.job_status_routing_key).where(ArgoJob.id == argo_id)
    ).first()
    return (row[0], row[1]) if row else ("", None)


def move_subjob(
    subjob_id: int, expected: str, path: list[str], message: str = "", **values: Any
) -> bool:
    """Move a subjob from ``expected`` through each state of ``path``, as one transaction.

    ``values`` are written with the last state. Returns False, changing nothing, if the subjob
    was not at ``expected`` (another worker moved it) or a move is not allowed. The status
    messages are built inside the transaction and sent after it commits.
    """
    frm = expected
    for to in path:
        if not states.BALSAM.can_move(frm, to):
            raise ValueError(f"subjob {subjob_id}: {frm} -> {to} is not allowed")
        frm = to
    message = _storable(message)
    try:
        with session_scope() as s:
            subjob = s.get(SubJob, subjob_id)
            if subjob is None:
                return False
            events: list[JobEvent] = []
            frm = expected
            for i, to in enumerate(path):
                last = i == len(path) - 1
                note = message if last else ""
                fields = {"state_message": note, **(values if last else {})}
                if not _cas(s, SubJob, subjob_id, frm, to, fields):
                    raise _LostRace
                events.append(_event(s, subjob.argo_job_id, subjob_id, frm, to, note))
                events += _mirror(s, subjob, frm, to, note)
                frm = to
            s.flush()
            argo_name, key = _argo_labels(s, subjob.argo_job_id)
            messages = [
                (
                    e.id,
                    routing_key(key),
                    body(e, subjob.name, subjob.site) if e.subjob_id else body(e, argo_name, None),
                )
                for e in events
            ]
    except _LostRace:
        return False
    send(messages)
    return True


def move_argo(
    argo_id: int, expected: str, to: str | list[str], message: str = "", **values: Any
) -> bool:
    """Compare-and-set an Argo job along its state machine (operators' moves: force_argo).

    ``to`` may be a path of states, walked in one transaction (``values`` and ``message`` go
    with the last): one commit instead of one per state.
    """
    path = [to] if isinstance(to, str) else to
    frm = expected
    for step in path:
        if not states.ARGO.can_move(frm, step):
            raise ValueError(f"argo job {argo_id}: {frm} -> {step} is not allowed")
        frm = step
    message = _storable(message)
    try:
        with session_scope() as s:
            events: list[JobEvent] = []
            frm = expected
            for i, step in enumerate(path):
                last = i == len(path) - 1
                note = message if last else ""
                fields = dict(values) if last else {}
                fields.setdefault("state_message", note if states.is_failed(step) else "")
                if not _cas(s, ArgoJob, argo_id, frm, step, fields):
                    raise _LostRace
                events.append(_event(s, argo_id, None, frm, step, note))
                frm = step
            s.flush()
            name, key = _argo_labels(s, argo_id)
            messages = [(e.id, routing_key(key), body(e, name, None)) for e in events]
    except _LostRace:
        return False
    send(messages)
    return True


def force_subjob(
    session: Session, subjob: SubJob, to: str, message: str, **values: Any
) -> JobEvent | None:
    """An operator's move outside the automatic machine (retry, alter); still a CAS."""
    if not _cas(session, SubJob, subjob.id, subjob.state, to, {"state_message": message, **values}):
        return None
    return _event(session, subjob.argo_job_id, subjob.id, subjob.state, to, message)


def force_argo(
    session: Session, argo: ArgoJob, to: str, message: str, **values: Any
) -> JobEvent | None:
    if not _cas(session, ArgoJob, argo.id, argo.state, to, {"state_message": message, **values}):
        return None
    return _event(session, argo.id, None, argo.state, to, message)


def load_subjob(subjob_id: int) -> SubJob | None:
    with read_scope() as s:
        return s.scalars(select(SubJob).where(SubJob.id == subjob_id)).first()
