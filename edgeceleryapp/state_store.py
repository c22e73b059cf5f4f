"""The one writer of job state: every change is a compare-and-set with its JobEvent, committed,
then published as a status message.

``UPDATE ... WHERE id = :id AND state = :expected``: zero rows means another worker got there
first, and the caller does nothing more. A subjob's automatic move takes its Argo job along in
the same transaction (HUST'17 2.2.1: the Argo job follows its subjob), so the two never
disagree. The allowed moves are ``edgeceleryapp.states``'s; what is owed after a move is
``edgeceleryapp.next_step``'s.

Two kinds of change, one write (``StateWriter._change``):

- ``move_subjob`` / ``move_argo``: the steps' moves along the state machine, each its own
  transaction.
- ``transaction()``: an operator's changes (retry, cancel, a state set by hand), which may leave
  the machine's path and touch several records at once; the caller reads what it needs in the
  same transaction (``StateWriter.session``).

In both, the status messages are built inside the transaction and sent after it commits
(``edgeceleryapp.status_outbox``); no caller publishes by hand.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import Connection, Row, Table, bindparam, insert, select, update
from sqlalchemy.orm import Session

from edgeceleryapp import graph, states
from edgeceleryapp.db import engine, read_connection
from edgeceleryapp.models import ArgoJob, JobEvent, SubJob, utcnow
from edgeceleryapp.status_outbox import body, pending_marks, routing_key, send


class _LostRace(Exception):
    """Raised inside a transaction to roll it back when a compare-and-set finds another state."""


def _storable(message: str) -> str:
    """A reason often quotes outside output (a script's stderr, a scheduler's answer), which
    may hold NUL bytes; PostgreSQL text cannot, and the failure must still be recorded."""
    return message.replace("\x00", "\ufffd")


# The hot path (every step of every subjob) in Core statements built once, on a plain
# connection: building ORM statements, flushing ORM events and the ORM session itself cost
# more CPU than the database work (profiled with bench/throughput.py).
_SUB = SubJob.__table__
_ARGO = ArgoJob.__table__
_EVENTS = JobEvent.__table__
_CAS = {
    table.name: update(table).where(
        table.c.id == bindparam("cas_id"), table.c.state == bindparam("cas_expected")
    )
    for table in (_SUB, _ARGO)
}
_CLEARED = {
    _SUB.name: {
        "lease_owner": None,
        "lease_until": None,
        "dispatched_at": None,
        "waiting_since": None,
    },
    _ARGO.name: {"lease_owner": None, "lease_until": None, "dispatched_at": None},
}
_MIRROR = update(_ARGO).where(
    _ARGO.c.id == bindparam("cas_id"),
    _ARGO.c.state == bindparam("cas_expected"),
    _ARGO.c.current_subjob == bindparam("cas_position"),
)
_INSERT_EVENT = insert(_EVENTS).returning(_EVENTS.c.id)
_INSERT_EVENTS = insert(_EVENTS).returning(_EVENTS.c.id, sort_by_parameter_order=True)
_SUBJOB_LABELS = (
    select(
        _SUB.c.argo_job_id,
        _SUB.c.position,
        _SUB.c.name,
        _SUB.c.site,
        _ARGO.c.name,
        _ARGO.c.job_status_routing_key,
        _ARGO.c.graph,
    )
    .select_from(_SUB.outerjoin(_ARGO, _ARGO.c.id == _SUB.c.argo_job_id))
    .where(_SUB.c.id == bindparam("subjob_id"))
)
_ARGO_LABELS = select(_ARGO.c.name, _ARGO.c.job_status_routing_key).where(
    _ARGO.c.id == bindparam("argo_id")
)
_LOAD_SUBJOB = select(_SUB).where(_SUB.c.id == bindparam("subjob_id"))


class Recorded(NamedTuple):
    """A JobEvent as inserted (the fields a status message carries)."""

    id: int
    argo_job_id: int | None
    subjob_id: int | None
    from_state: str
    to_state: str
    time: datetime
    message: str


def _record_event(
    conn: Connection | Session,
    argo_id: int | None,
    subjob_id: int | None,
    frm: str,
    to: str,
    message: str,
) -> Recorded:
    row = {
        "argo_job_id": argo_id,
        "subjob_id": subjob_id,
        "from_state": frm,
        "to_state": to,
        "time": utcnow(),
        "message": message,
    }
    return Recorded(conn.execute(_INSERT_EVENT, row).scalar_one(), **row)


class StateWriter:
    """The changes of one write transaction, and the status messages they owe."""

    def __init__(self, conn: Connection):
        self.conn = conn
        self.messages: list[tuple[int, str, dict[str, Any]]] = []
        self._session: Session | None = None

    @property
    def session(self) -> Session:
        """An ORM session inside this transaction, for an operator's reads."""
        if self._session is None:
            self._session = Session(bind=self.conn)
        return self._session

    def _set(self, table: Table, ident: int, expected: str, values: dict) -> bool:
        """A move ends the step that made it: its lease, a pending due time and a wait for
        admission go with the old state."""
        params = {
            "cas_id": ident,
            "cas_expected": expected,
            "updated_at": utcnow(),
            **_CLEARED[table.name],
            **values,
        }
        return self.conn.execute(_CAS[table.name], params).rowcount == 1

    def _event(
        self,
        argo_id: int | None,
        subjob_id: int | None,
        frm: str,
        to: str,
        message: str,
        label: tuple[str | None, str, str | None],
    ) -> None:
        """Record one JobEvent and the status message it owes (``label``: routing key, name,
        site)."""
        event = _record_event(self.conn, argo_id, subjob_id, frm, to, message)
        key, name, site = label
        self.messages.append((event.id, routing_key(key), body(event, name, site)))

    def _change(
        self,
        table: Table,
        ident: int,
        expected: str,
        path: list[str],
        fields_for: Any,
        labels: tuple[int | None, tuple[str | None, str, str | None]],
        follow: Any = None,
    ) -> None:
        """Walk ``path`` from ``expected``: for each state a compare-and-set with the fields
        ``fields_for(i, state)``, its JobEvent and status message, and ``follow`` (the Argo
        mirror of an automatic subjob move). A lost compare-and-set rolls back the whole
        transaction."""
        argo_id, label = labels
        subjob_id = ident if table is _SUB else None
        frm = expected
        for i, to in enumerate(path):
            fields = fields_for(i, to)
            if not self._set(table, ident, frm, fields):
                raise _LostRace
            self._event(argo_id, subjob_id, frm, to, fields.get("state_message", ""), label)
            if follow is not None:
                follow(frm, to, fields["state_message"])
            frm = to

    def _subjob_labels(
        self, subjob_id: int
    ) -> tuple[int | None, int, str, str, str, str, bool | None]:
        row = self.conn.execute(_SUBJOB_LABELS, {"subjob_id": subjob_id}).first()
        if row is None:
            raise _LostRace
        return tuple(row)  # type: ignore[return-value]

    def _argo_labels(self, argo_id: int) -> tuple[str | None, str, None]:
        row = self.conn.execute(_ARGO_LABELS, {"argo_id": argo_id}).first()
        if row is None:
            raise _LostRace
        name, key = row
        return key, name or "", None

    def subjob(
        self, subjob_id: int, expected: str, path: list[str], message: str, values: dict
    ) -> None:
        """An automatic move along the subjob machine; the Argo job follows. ``values`` go
        with the last state, the message too."""
        argo_id, position, name, site, argo_name, key, in_graph = self._subjob_labels(subjob_id)
        last = len(path) - 1

        def fields(i: int, to: str) -> dict:
            note = message if i == last else ""
            return {"state": to, "state_message": note, **(values if i == last else {})}

        def follow(frm: str, to: str, note: str) -> None:
            if argo_id is None:
                return
            if in_graph:
                self._follow_graph(argo_id, subjob_id, name, to, note, (key, argo_name))
            else:
                self._follow(argo_id, position, subjob_id, site, frm, to, note, (key, argo_name))

        self._change(_SUB, subjob_id, expected, path, fields, (argo_id, (key, name, site)), follow)

    def _follow(
        self,
        argo_id: int,
        position: int,
        subjob_id: int,
        site: str,
        frm: str,
        to: str,
        message: str,
        argo_label: tuple[str | None, str],
    ) -> None:
        """Move the Argo job to the state that reflects its current subjob's change."""
        expected = states.argo_state_for_subjob(frm)
        if states.is_failed(to):
            target = states.argo_failure_for(expected)
        elif to in states.ARGO_MIRROR:
            target = states.ARGO_MIRROR[to]
        else:
            return
        params = {
            "cas_id": argo_id,
            "cas_expected": expected,
            "cas_position": position,
            "state": target,
            "updated_at": utcnow(),
            "state_message": message if states.is_failed(target) else "",
        }
        if self.conn.execute(_MIRROR, params).rowcount != 1:
            return
        note = f"subjob {subjob_id} at {site}: {to}" + (f": {message}" if message else "")
        key, name = argo_label
        self._event(argo_id, None, expected, target, note, (key, name or "", None))

    def _follow_graph(
        self,
        argo_id: int,
        subjob_id: int,
        name: str,
        to: str,
        message: str,
        argo_label: tuple[str | None, str],
    ) -> None:
        """A graph job's bookkeeping when one of its subjobs finishes or fails, in the same
        transaction (``edgeceleryapp.graph``): a finished subjob lowers its children's count
        of parents left; a failed one blocks its descendants. The Argo job moves on when the
        last subjob finished (SUBJOBS_COMPLETED) or when every open one is stuck (failed)."""
        now = utcnow()
        if to == "JOB_FINISHED":
            self.conn.execute(graph.LOWER_CHILDREN, {"parent": subjob_id, "now": now})
            counts = self.conn.execute(graph.COUNT_FINISHED, {"argo": argo_id}).one()
        elif states.is_failed(to):
            stuck = 1 + self._block_descendants(subjob_id, name, message)
            counts = self.conn.execute(graph.COUNT_STUCK, {"argo": argo_id, "stuck": stuck}).one()
        else:
            return
        left, stuck_now, argo_state = counts
        if argo_state != states.GRAPH_RUNNING:
            return
        key, argo_name = argo_label
        if left == 0:
            target, note = "SUBJOBS_COMPLETED", ""
        elif left == stuck_now:
            target = states.failed("SUBJOBS_COMPLETED")
            if to == "JOB_FINISHED":  # the last branch ended: name the failed ones
                failed = self.conn.execute(graph.failed_names(argo_id)).scalars().all()
                note = f"failed: {', '.join(failed)}; nothing more can run"
            else:
                note = f"{name} failed" + (f": {message}" if message else "")
                note += "; nothing more can run"
        else:
            return
        if self._set(_ARGO, argo_id, argo_state, {"state": target, "state_message": note}):
            self._event(argo_id, None, argo_state, target, note, (key, argo_name or "", None))

    def _block_descendants(self, subjob_id: int, name: str, message: str) -> int:
        """Every CREATED descendant of the failed subjob ``name`` ends BLOCKED, saying why
        ("parent gen failed: ..."); how many."""
        reason = f"{name} failed" + (f": {message}" if message else "")
        blocked = 0
        for child, depth in self.conn.execute(graph.descendants_query(subjob_id)).all():
            why = f"{'parent' if depth == 1 else 'ancestor'} {reason}"
            try:
                self._change(
                    _SUB,
                    child,
                    "CREATED",
                    [states.BLOCKED],
                    lambda _i, _to, why=why: {"state": states.BLOCKED, "state_message": why},
                    self._labels_of(child),
                )
            except _LostRace:  # not CREATED: blocked by another failed ancestor already
                continue
            blocked += 1
        return blocked

    def _labels_of(self, subjob_id: int) -> tuple[int | None, tuple[str | None, str, str]]:
        argo_id, _, name, site, _, key, _ = self._subjob_labels(subjob_id)
        return argo_id, (key, name, site)

    def stuck_released(self, argo_id: int, count: int) -> None:
        """A retry took ``count`` failed or blocked subjobs of the graph job back."""
        self.conn.execute(graph.COUNT_STUCK, {"argo": argo_id, "stuck": -count}).one()

    def argo(
        self, argo_id: int, expected: str, path: list[str], message: str, values: dict
    ) -> None:
        """A move along the Argo machine; ``values`` and ``message`` go with the last state;
        the state message is kept only on a failure unless ``values`` set it."""
        last = len(path) - 1

        def fields(i: int, to: str) -> dict:
            note = message if i == last else ""
            out = {"state": to, **(values if i == last else {})}
            out.setdefault("state_message", note if states.is_failed(to) else "")
            return out

        label = self._argo_labels(argo_id)
        self._change(_ARGO, argo_id, expected, path, fields, (argo_id, label))

    def force_subjob(
        self, subjob_id: int, expected: str, to: str, message: str, **values: Any
    ) -> bool:
        """An operator's move outside the automatic machine (retry, kill); still a
        compare-and-set. False, changing nothing, if the subjob is not at ``expected``."""
        return self._force(_SUB, subjob_id, expected, to, message, values)

    def force_argo(self, argo_id: int, expected: str, to: str, message: str, **values: Any) -> bool:
        """``force_subjob`` for an Argo job."""
        return self._force(_ARGO, argo_id, expected, to, message, values)

    def _force(
        self, table: Table, ident: int, expected: str, to: str, message: str, values: dict
    ) -> bool:
        fields = {"state": to, "state_message": _storable(message), **values}
        try:
            if table is _SUB:
                argo_id, _, name, site, _, key, _ = self._subjob_labels(ident)
                labels = (argo_id, (key, name, site))
            else:
                labels = (ident, self._argo_labels(ident))
            self._change(table, ident, expected, [to], lambda _i, _to: fields, labels)
        except _LostRace:
            return False
        return True

    def redriven(self, table: Table, ident: int, state: str, message: str) -> bool:
        """Record that the record's owed step is sent again (its message was lost): a JobEvent
        that keeps the state, with the reason. False, recording nothing, if the record moved
        on or an execution holds its lease meanwhile."""
        now = utcnow()
        c = table.c
        stamped = self.conn.execute(
            update(table)
            .where(
                c.id == ident,
                c.state == state,
                (c.lease_until.is_(None)) | (c.lease_until < now),
            )
            .values(dispatched_at=now)
        )
        if stamped.rowcount != 1:
            return False
        self._kept_state_event(table, ident, state, message)
        return True

    def _kept_state_event(self, table: Table, ident: int, state: str, message: str) -> None:
        """A JobEvent that keeps the record's state (a re-drive, a reason to wait)."""
        if table is _SUB:
            argo_id, _, name, site, _, key, _ = self._subjob_labels(ident)
            self._event(argo_id, ident, state, state, message, (key, name, site))
        else:
            self._event(ident, None, state, state, message, self._argo_labels(ident))

    def noted(
        self, table: Table, ident: int, state: str, message: str, due_at: datetime | None
    ) -> bool:
        """Say why a record waits without moving it (a retry after back-off, a wait for
        admission): its ``state_message``, and a JobEvent that keeps the state, so the
        timeline and the status messages say it too. ``due_at`` is when its next message is
        due (the reconciler waits for it). False, recording nothing, if the record is no
        longer at ``state``; a message it already carries is not recorded twice."""
        c = table.c
        current = self.conn.execute(
            select(c.state_message).where(c.id == ident, c.state == state)
        ).first()
        if current is None:
            return False
        values: dict[str, Any] = {"state_message": message}
        if due_at is not None:
            values["dispatched_at"] = due_at
        self.conn.execute(update(table).where(c.id == ident).values(**values))
        if current.state_message == message:
            return True
        self._kept_state_event(table, ident, state, message)
        return True

    def site_chosen(self, subjob_id: int, site: str, reason: str) -> str | None:
        """Record the site chosen among a CREATED subjob's candidates, and why, once: a
        compare-and-set on its unstamped choice (``site_chosen_at``), with a JobEvent that
        keeps the state. The site the subjob runs at: this one, or the first choice if one
        was made already; None if it is gone."""
        c = _SUB.c
        chose = self.conn.execute(
            update(_SUB)
            .where(c.id == subjob_id, c.state == "CREATED", c.site_chosen_at.is_(None))
            .values(site=site, site_chosen_at=utcnow())
        )
        if chose.rowcount == 1:
            self._kept_state_event(_SUB, subjob_id, "CREATED", f"site chosen: {reason}")
            return site
        return self.conn.execute(select(c.site).where(c.id == subjob_id)).scalar()

    def created(
        self, jobs: list[tuple[int, int | None, tuple[str | None, str, str | None]]]
    ) -> None:
        """New records (argo id, subjob id, label) reach CREATED: their events in one
        multi-row insert, as intake stores a batch of jobs at once."""
        if not jobs:
            return  # an empty multi-row insert would insert one row of defaults
        now = utcnow()
        rows = [
            {
                "argo_job_id": argo_id,
                "subjob_id": subjob_id,
                "from_state": "",
                "to_state": "CREATED",
                "time": now,
                "message": "received",
            }
            for argo_id, subjob_id, _ in jobs
        ]
        ids = self.conn.execute(_INSERT_EVENTS, rows).scalars().all()
        for event_id, row, (_, _, (key, name, site)) in zip(ids, rows, jobs, strict=True):
            event = Recorded(event_id, **row)
            self.messages.append((event_id, routing_key(key), body(event, name, site)))


@contextmanager
def transaction(operator: bool = False) -> Iterator[StateWriter]:
    """One write transaction of state changes: commit, then send their status messages (an
    operator's are marked sent at once: a command's process may end right after)."""
    with engine().begin() as conn, pending_marks(conn):
        writer = StateWriter(conn)
        try:
            yield writer
        finally:
            if writer._session is not None:
                writer._session.close()
    send(writer.messages, mark_now=operator)


def _move(machine: states.Machine, name: str, expected: str, path: list[str], write: Any) -> bool:
    for state in path:
        if not machine.can_move(expected, state):
            raise ValueError(f"{name}: {expected} -> {state} is not allowed")
        expected = state
    try:
        with transaction() as tx:
            write(tx)
    except _LostRace:
        return False
    return True


def move_subjob(
    subjob_id: int,
    expected: str,
    path: list[str],
    message: str = "",
    then: Callable[[StateWriter], object] | None = None,
    **values: Any,
) -> bool:
    """Move a subjob from ``expected`` through each state of ``path``, as one transaction.

    ``values`` are written with the last state. ``then`` writes more in the same
    transaction, after the move (a postprocess's children: they are added exactly when the
    move is). Returns False, changing nothing, if the subjob was not at ``expected`` (another
    worker moved it); a move the machine does not allow is a ValueError.
    """
    message = _storable(message)

    def write(tx: StateWriter) -> None:
        tx.subjob(subjob_id, expected, path, message, values)
        if then is not None:
            then(tx)

    return _move(states.BALSAM, f"subjob {subjob_id}", expected, path, write)


class Move(NamedTuple):
    """One subjob's move for ``move_subjobs``: ``move_subjob``'s arguments."""

    subjob_id: int
    expected: str
    path: list[str]
    message: str = ""
    values: dict[str, Any] = {}


def move_subjobs(moves: list[Move]) -> list[bool]:
    """``move_subjob`` for many subjobs in ONE transaction (the poller's tick moves every job
    it saw end at once): each move in a savepoint of its own, so a subjob another worker moved
    is left out alone. Which moves were made, in order."""
    for move in moves:
        for frm, to in zip([move.expected, *move.path], move.path, strict=False):
            if not states.BALSAM.can_move(frm, to):
                raise ValueError(f"subjob {move.subjob_id}: {frm} -> {to} is not allowed")
    made: list[bool] = []
    with transaction() as tx:
        for move in moves:
            owed = len(tx.messages)
            savepoint = tx.conn.begin_nested()
            try:
                tx.subjob(
                    move.subjob_id, move.expected, move.path, _storable(move.message), move.values
                )
            except _LostRace:
                savepoint.rollback()
                del tx.messages[owed:]
                made.append(False)
            else:
                savepoint.commit()
                made.append(True)
    return made


def move_argo(
    argo_id: int,
    expected: str,
    to: str | list[str],
    message: str = "",
    machine: states.Machine = states.ARGO,
    **values: Any,
) -> bool:
    """Compare-and-set an Argo job along its state machine (``states.GRAPH`` for a graph job).

    ``to`` may be a path of states, walked in one transaction (``values`` and ``message`` go
    with the last): one commit instead of one per state.
    """
    path = [to] if isinstance(to, str) else to
    message = _storable(message)
    return _move(
        machine,
        f"argo job {argo_id}",
        expected,
        path,
        lambda tx: tx.argo(argo_id, expected, path, message, values),
    )


def note(
    table: Table, ident: int, state: str, message: str, due_at: datetime | None = None
) -> bool:
    """``StateWriter.noted`` in a transaction of its own."""
    with transaction() as tx:
        return tx.noted(table, ident, state, _storable(message), due_at)


def choose_site(subjob_id: int, site: str, reason: str) -> str | None:
    """``StateWriter.site_chosen`` in a transaction of its own."""
    with transaction() as tx:
        return tx.site_chosen(subjob_id, site, _storable(reason))


def load_subjob(subjob_id: int) -> Row | None:
    """Every column of a subjob, as a row read by attribute like a record: every step of every
    subjob starts here, and a compiled Core query costs a fraction of an ORM load
    (bench/profiles.py). The steps only read it; changes go through ``move_subjob``."""
    with read_connection() as conn:
        return conn.execute(_LOAD_SUBJOB, {"subjob_id": subjob_id}).first()
