"""State changes as compare-and-set, with their JobEvents and the Argo mirror, in one commit.

``UPDATE ... WHERE id = :id AND state = :expected``: zero rows means another worker got there
first, and the caller does nothing more. A subjob's change moves its Argo job along in the same
transaction (seed 000 2.2.1: the Argo job follows its current subjob), so the two never
disagree. Status messages go out after the commit.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import Connection, Row, Table, bindparam, insert, select, update
from sqlalchemy.orm import Session

from edgeceleryapp import states
from edgeceleryapp.db import engine, read_connection
from edgeceleryapp.models import ArgoJob, JobEvent, SubJob, utcnow
from edgeceleryapp.status_outbox import body, pending_marks, routing_key, send


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


# The hot path (every step of every subjob) in Core statements built once, on a plain
# connection: building ORM statements, flushing ORM events and the ORM session itself cost
# more CPU than the database work (profiled with bench/throughput.py). Operators' moves
# (force_*) keep the ORM path above.
Executor = Session | Connection
_SUB = SubJob.__table__
_ARGO = ArgoJob.__table__
_EVENTS = JobEvent.__table__
_CAS = {
    table.name: update(table).where(
        table.c.id == bindparam("cas_id"), table.c.state == bindparam("cas_expected")
    )
    for table in (_SUB, _ARGO)
}
_MIRROR = update(_ARGO).where(
    _ARGO.c.id == bindparam("cas_id"),
    _ARGO.c.state == bindparam("cas_expected"),
    _ARGO.c.current_subjob == bindparam("cas_position"),
)
_INSERT_EVENT = insert(_EVENTS).returning(_EVENTS.c.id)
_SUBJOB_LABELS = (
    select(
        _SUB.c.argo_job_id,
        _SUB.c.position,
        _SUB.c.name,
        _SUB.c.site,
        _ARGO.c.name,
        _ARGO.c.job_status_routing_key,
    )
    .select_from(_SUB.outerjoin(_ARGO, _ARGO.c.id == _SUB.c.argo_job_id))
    .where(_SUB.c.id == bindparam("subjob_id"))
)
_ARGO_LABELS = select(_ARGO.c.name, _ARGO.c.job_status_routing_key).where(
    _ARGO.c.id == bindparam("argo_id")
)


class Recorded(NamedTuple):
    """A JobEvent as inserted (the fields a status message carries)."""

    id: int
    argo_job_id: int | None
    subjob_id: int | None
    from_state: str
    to_state: str
    time: datetime
    message: str


def _set(session: Executor, table: Table, ident: int, expected: str, values: dict) -> bool:
    params = {"cas_id": ident, "cas_expected": expected, "updated_at": utcnow(), **values}
    return session.execute(_CAS[table.name], params).rowcount == 1


def record_event(
    session: Executor, argo_id: int | None, subjob_id: int | None, frm: str, to: str, message: str
) -> Recorded:
    """Insert one JobEvent (Core, no ORM flush); what its status message needs."""
    row = {
        "argo_job_id": argo_id,
        "subjob_id": subjob_id,
        "from_state": frm,
        "to_state": to,
        "time": utcnow(),
        "message": message,
    }
    return Recorded(session.execute(_INSERT_EVENT, row).scalar_one(), **row)


_INSERT_EVENTS = insert(_EVENTS).returning(_EVENTS.c.id, sort_by_parameter_order=True)


def record_events(
    conn: Connection, jobs: list[tuple[int, int | None]], frm: str, to: str, message: str
) -> list[Recorded]:
    """The same change for many (argo id, subjob id) pairs in one multi-row insert (intake
    stores a batch of jobs at once)."""
    if not jobs:
        return []  # an empty multi-row insert would insert one row of defaults
    now = utcnow()
    rows = [
        {
            "argo_job_id": argo_id,
            "subjob_id": subjob_id,
            "from_state": frm,
            "to_state": to,
            "time": now,
            "message": message,
        }
        for argo_id, subjob_id in jobs
    ]
    ids = conn.execute(_INSERT_EVENTS, rows).scalars().all()
    return [Recorded(event_id, **row) for event_id, row in zip(ids, rows, strict=True)]


def _follow(
    session: Executor,
    argo_id: int | None,
    position: int,
    subjob_id: int,
    site: str,
    frm: str,
    to: str,
    message: str,
) -> list[Recorded]:
    """Move the Argo job to the state that reflects its current subjob's change."""
    if argo_id is None:
        return []
    expected = states.argo_state_for_subjob(frm)
    if states.is_failed(to):
        target = states.argo_failure_for(expected)
    elif to in states.ARGO_MIRROR:
        target = states.ARGO_MIRROR[to]
    else:
        return []
    params = {
        "cas_id": argo_id,
        "cas_expected": expected,
        "cas_position": position,
        "state": target,
        "updated_at": utcnow(),
        "state_message": message if states.is_failed(target) else "",
    }
    if session.execute(_MIRROR, params).rowcount != 1:
        return []
    note = f"subjob {subjob_id} at {site}: {to}" + (f": {message}" if message else "")
    return [record_event(session, argo_id, None, expected, target, note)]


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
        with engine().begin() as s, pending_marks(s):
            row = s.execute(_SUBJOB_LABELS, {"subjob_id": subjob_id}).first()
            if row is None:
                return False
            argo_id, position, name, site, argo_name, key = row
            events: list[Recorded] = []
            frm = expected
            for i, to in enumerate(path):
                last = i == len(path) - 1
                note = message if last else ""
                fields = {"state": to, "state_message": note, **(values if last else {})}
                if not _set(s, _SUB, subjob_id, frm, fields):
                    raise _LostRace
                events.append(record_event(s, argo_id, subjob_id, frm, to, note))
                events += _follow(s, argo_id, position, subjob_id, site, frm, to, note)
                frm = to
    except _LostRace:
        return False
    send(
        [
            (
                e.id,
                routing_key(key),
                body(e, name, site) if e.subjob_id else body(e, argo_name or "", None),
            )
            for e in events
        ]
    )
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
        with engine().begin() as s, pending_marks(s):
            events: list[Recorded] = []
            frm = expected
            for i, step in enumerate(path):
                last = i == len(path) - 1
                note = message if last else ""
                fields = {"state": step, **(values if last else {})}
                fields.setdefault("state_message", note if states.is_failed(step) else "")
                if not _set(s, _ARGO, argo_id, frm, fields):
                    raise _LostRace
                events.append(record_event(s, argo_id, None, frm, step, note))
                frm = step
            name, key = s.execute(_ARGO_LABELS, {"argo_id": argo_id}).one()
    except _LostRace:
        return False
    send([(e.id, routing_key(key), body(e, name, None)) for e in events])
    return True


def force_subjob(
    session: Session, subjob: SubJob, to: str, message: str, **values: Any
) -> JobEvent | None:
    """An operator's move outside the automatic machine (retry, alter); still a CAS.

    The state before is read first: the ORM update refreshes ``subjob`` in the session."""
    frm = subjob.state
    if not _cas(session, SubJob, subjob.id, frm, to, {"state_message": message, **values}):
        return None
    return _event(session, subjob.argo_job_id, subjob.id, frm, to, message)


def force_argo(
    session: Session, argo: ArgoJob, to: str, message: str, **values: Any
) -> JobEvent | None:
    frm = argo.state
    if not _cas(session, ArgoJob, argo.id, frm, to, {"state_message": message, **values}):
        return None
    return _event(session, argo.id, None, frm, to, message)


_LOAD_SUBJOB = select(_SUB).where(_SUB.c.id == bindparam("subjob_id"))


def load_subjob(subjob_id: int) -> Row | None:
    """Every column of a subjob, as a row read by attribute like a record: every step of every
    subjob starts here, and a compiled Core query costs a fraction of an ORM load
    (bench/profiles.py). The steps only read it; changes go through ``move_subjob``."""
    with read_connection() as conn:
        return conn.execute(_LOAD_SUBJOB, {"subjob_id": subjob_id}).first()
