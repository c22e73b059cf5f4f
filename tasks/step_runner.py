"""How a step runs once: only at its start state, and only by the execution that holds the
record's lease (edgeceleryapp/leases.py), renewed while it works.

A second delivery of a step (the broker's redelivery, a re-drive) that finds the lease held
ends quietly (``Busy``); one that finds the step done returns; the holder's failure gives the
lease back at once, so its retry (or a re-drive) need not wait for it to run out.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import Row, Table

from edgeceleryapp import leases
from edgeceleryapp.next_step import Step
from edgeceleryapp.settings import get_settings
from tasks.retry_policy import Busy, Stop, should_run


def run_once(
    step: Step,
    table: Table,
    ident: int,
    state_now: Callable[[], str | None],
    work: Callable[[Row], Any],
) -> tuple[bool, Any]:
    """(True, what ``work`` returned) when this execution ran the step on the record (as
    taken with its lease); (False, None) when the step had already happened. ``state_now``
    reads the record's state (None: gone) when the lease could not be taken."""
    owner = leases.new_owner()
    seconds = get_settings().lease_seconds
    what = f"{'subjob' if table is leases.SUBJOBS else 'argo job'} {ident}"
    row = leases.take(table, ident, step.start, owner, seconds)
    if row is None:
        state = state_now()
        if state is None:
            raise Stop
        if should_run(step, state, what):
            raise Busy(f"{what}: another execution is working on {step.name}")
        return False, None
    try:
        with leases.renewed(table, ident, owner, seconds):
            return True, work(row)
    except BaseException:
        leases.release(table, ident, owner)
        raise
