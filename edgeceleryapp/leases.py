"""Leases on job records: which execution of a step works on a record now, and until when.

A step takes the lease before its side effects, in the same statement that checks the record
is at the step's start state; a background thread of the process renews it while the step
works (a long transfer, a slow scheduler command, a script); the state move that ends the step
clears it. A second delivery of the same step (the broker's redelivery after its visibility
timeout, a re-drive) finds a live lease held by another execution and ends quietly: no retry
spent, no failure, no state change. A worker that dies stops renewing, the lease runs out, and
the reconciler (``tasks/reconcile.py``) sends the step again. The broker's timeouts thus tune
how fast work is recovered, not whether it runs once.

The owner is one execution (a random token), not the task id: a message delivered twice keeps
its task id, and its second copy must not think it holds the first copy's lease.
"""

from __future__ import annotations

import logging
import os
import secrets
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta

from sqlalchemy import Row, Table, bindparam, or_, update

from edgeceleryapp.db import engine
from edgeceleryapp.models import ArgoJob, SubJob, utcnow

log = logging.getLogger(__name__)

SUBJOBS: Table = SubJob.__table__  # type: ignore[assignment]
ARGO_JOBS: Table = ArgoJob.__table__  # type: ignore[assignment]


def _take(table: Table):  # type: ignore[no-untyped-def]
    c = table.c
    return (
        update(table)
        .where(
            c.id == bindparam("ident"),
            c.state == bindparam("at_state"),
            or_(
                c.lease_owner.is_(None),
                c.lease_owner == bindparam("owner"),
                c.lease_until < bindparam("now"),
            ),
        )
        .values(lease_owner=bindparam("owner"), lease_until=bindparam("until"))
        .returning(*table.c)
    )


def _owned(table: Table, **values: object):  # type: ignore[no-untyped-def]
    c = table.c
    return (
        update(table)
        .where(c.id == bindparam("ident"), c.lease_owner == bindparam("owner"))
        .values(**values)
    )


_TAKE = {t.name: _take(t) for t in (SUBJOBS, ARGO_JOBS)}
_RENEW = {t.name: _owned(t, lease_until=bindparam("until")) for t in (SUBJOBS, ARGO_JOBS)}
_RELEASE = {t.name: _owned(t, lease_owner=None, lease_until=None) for t in (SUBJOBS, ARGO_JOBS)}
_DUE = {
    t.name: update(t).where(t.c.id == bindparam("ident")).values(dispatched_at=bindparam("due"))
    for t in (SUBJOBS, ARGO_JOBS)
}


def new_owner() -> str:
    """A token for one execution of a step."""
    return secrets.token_hex(8)


def take(table: Table, ident: int, at_state: str, owner: str, seconds: float) -> Row | None:
    """Take the record's lease if it is at ``at_state`` and no other execution holds a live
    lease: the record as it is now, or None (another state, gone, or held: the caller reads
    the record to tell which)."""
    now = utcnow()
    params = {
        "ident": ident,
        "at_state": at_state,
        "owner": owner,
        "now": now,
        "until": now + timedelta(seconds=seconds),
    }
    with engine().begin() as conn:
        return conn.execute(_TAKE[table.name], params).first()


def release(table: Table, ident: int, owner: str) -> None:
    """Give the lease back: the step ends without moving the record (it will be retried, or
    it waits to be admitted)."""
    with engine().begin() as conn:
        conn.execute(_RELEASE[table.name], {"ident": ident, "owner": owner})


# A record stored without starting it (``argo submit --no-start``): nothing re-drives it.
HELD = datetime(9999, 1, 1)


def hold(table: Table, ident: int) -> None:
    """Keep the reconciler away from a record that was stored but deliberately not started."""
    with engine().begin() as conn:
        conn.execute(_DUE[table.name], {"ident": ident, "due": HELD})


class _Renewer:
    """The process's one thread that renews every lease a step of this process holds."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.held: dict[tuple[str, int, str], float] = {}  # (table, id, owner) -> seconds
        self.wake = threading.Event()
        self.thread: threading.Thread | None = None

    def add(self, table: Table, ident: int, owner: str, seconds: float) -> None:
        with self.lock:
            self.held[(table.name, ident, owner)] = seconds
            if self.thread is None:
                self.thread = threading.Thread(target=self._run, name="lease-renewer", daemon=True)
                self.thread.start()

    def remove(self, table: Table, ident: int, owner: str) -> None:
        with self.lock:
            self.held.pop((table.name, ident, owner), None)

    def _run(self) -> None:
        while True:
            with self.lock:
                held = dict(self.held)
            period = min(held.values(), default=60.0) / 3
            self.wake.wait(period)
            if held:
                self.renew(held, utcnow())

    def renew(self, held: dict[tuple[str, int, str], float], now: datetime) -> None:
        try:
            with engine().begin() as conn:
                for (name, ident, owner), seconds in held.items():
                    until = now + timedelta(seconds=seconds)
                    params = {"ident": ident, "owner": owner, "until": until}
                    conn.execute(_RENEW[name], params)
        except Exception as exc:  # the next round tries again; a lease that runs out is safe
            log.warning("could not renew %d leases: %s", len(held), exc)


_renewer = _Renewer()


def _forget_renewer() -> None:
    """A forked child holds none of its parent's leases and has no renewing thread."""
    global _renewer
    _renewer = _Renewer()


os.register_at_fork(after_in_child=_forget_renewer)


@contextmanager
def renewed(table: Table, ident: int, owner: str, seconds: float) -> Iterator[None]:
    """Keep the lease alive while the body works."""
    _renewer.add(table, ident, owner, seconds)
    try:
        yield
    finally:
        _renewer.remove(table, ident, owner)
