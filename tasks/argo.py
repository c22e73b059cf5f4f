"""The Argo steps (queue ``argo``): stage the Argo job's input, hand subjobs to their sites one
after the other (the SUBJOB_* loop of the HUST'17 paper's Figure 4), stage the final output, finish.

The Argo job follows its current subjob's states in the same transaction as the subjob (see
``edgeceleryapp.state_store``); these tasks do the moves Argo itself makes.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

from sqlalchemy import Row, bindparam, select

from backends.transfers import TransferContext, transfer_for
from backends.transfers import scope as transfer_scope
from edgeceleryapp import dead_letters, graph, leases, next_step, site_handoff, state_store, states
from edgeceleryapp.brokertransport import batch_producer
from edgeceleryapp.celery_app import app
from edgeceleryapp.db import engine, read_connection
from edgeceleryapp.models import ArgoJob, SubJob, utcnow
from edgeceleryapp.settings import get_settings
from edgeceleryapp.site_monitor import take_lease
from edgeceleryapp.state_store import move_argo
from edgeceleryapp.status_outbox import flush
from tasks.reconcile import ARGO_SWEEP, reconcile_argo, reconcile_handoffs, sweep_period
from tasks.retry_policy import StepTask, Stop, guarded
from tasks.step_runner import run_once
from workflows import chains


def staging_dir(argo_id: int) -> Path:
    return get_settings().argo.staging_dir / str(argo_id)


def transfer_context(argo_id: int, step: str) -> TransferContext:
    """What the Argo job's URLs may name (the Argo transfer roots, its own staging directory:
    ``backends.transfers.scope``) and its own side, its staging directory."""
    settings = get_settings()
    scope = transfer_scope.for_argo(settings, argo_id)
    return TransferContext(
        roots=scope.local_roots(),
        settings=settings.argo.transfers,
        token=f"a{argo_id}-{step}",
        local_roots=[staging_dir(argo_id)],
        scope=scope,
    )


_ARGO = ArgoJob.__table__
_SUB = SubJob.__table__
_LOAD_ARGO = select(
    _ARGO.c.id,
    _ARGO.c.state,
    _ARGO.c.current_subjob,
    _ARGO.c.input_url,
    _ARGO.c.output_url,
    _ARGO.c.graph,
).where(_ARGO.c.id == bindparam("argo_id"))
_LOAD_SUBJOBS = (
    select(
        _SUB.c.id,
        _SUB.c.site,
        _SUB.c.argo_job_id,
        _SUB.c.state,
        _SUB.c.output_url,
        _SUB.c.waiting_since,
        _SUB.c.name,
        _SUB.c.sites,
    )
    .where(_SUB.c.argo_job_id == bindparam("argo_id"))
    .order_by(_SUB.c.position)
)


def load(argo_id: int) -> tuple[Row, list[Row]]:
    """The Argo job and its subjobs in order, as rows of the columns these steps read: every
    step of every Argo job loads them, and building records (with the subjob relationship)
    cost more than the queries (bench/profiles.py)."""
    with read_connection() as conn:
        argo = conn.execute(_LOAD_ARGO, {"argo_id": argo_id}).first()
        if argo is None:
            raise Stop
        return argo, list(conn.execute(_LOAD_SUBJOBS, {"argo_id": argo_id}))


def _state_of(argo_id: int) -> str | None:
    with read_connection() as conn:
        row = conn.execute(_LOAD_ARGO, {"argo_id": argo_id}).first()
    return row.state if row is not None else None


def _step(argo_id: int, name: str, work: Callable[[Row, list[Row]], None]) -> None:
    """Run one Argo step once (``tasks.step_runner``), then move the Argo job on."""
    step = next_step.ARGO_STEPS[name]
    ran, _ = run_once(
        step,
        leases.ARGO_JOBS,
        argo_id,
        lambda: _state_of(argo_id),
        lambda argo: work(argo, load(argo_id)[1]),
    )
    if ran:
        move_argo(argo_id, step.start, step.reaches)


def _stage_in(argo: Row, _subjobs: list[Row]) -> None:
    if argo.input_url:
        dest = staging_dir(argo.id) / "input"
        dest.mkdir(parents=True, exist_ok=True)
        context = transfer_context(argo.id, "stage_in")
        transfer_for(argo.input_url, context, "input_url").download(argo.input_url, dest)


def _gather(argo: Row, subjobs: list[Row], local: Path) -> None:
    """Bring the job's final output into ``local``: a linear job's last subjob's output; a
    graph's sink (a subjob no other names as parent), or each sink's in a sub-folder named
    after it when there are several."""
    if argo.graph:
        with read_connection() as conn:
            parents = graph.parents_of(conn, argo.id)
        has_children = {p for ps in parents.values() for p in ps}
        sinks = [(i, sj) for i, sj in enumerate(subjobs) if sj.id not in has_children]
    else:
        sinks = [(len(subjobs) - 1, subjobs[-1])]
    for i, sj in sinks:
        url = sj.output_url
        if not url or url == get_settings().argo.staging_url_for(str(argo.id), "output"):
            continue
        dest = local / sj.name if len(sinks) > 1 else local
        dest.mkdir(parents=True, exist_ok=True)
        context = transfer_context(argo.id, "fetch")
        transfer_for(url, context, f"subjobs[{i}].output_url").download(url, dest)


def _stage_out(argo: Row, subjobs: list[Row]) -> None:
    """Deliver the final output to the Argo job's output_url (Figure 1, step 14)."""
    if not argo.output_url:
        return
    local = staging_dir(argo.id) / "output"
    _gather(argo, subjobs, local)
    local.mkdir(parents=True, exist_ok=True)
    context = transfer_context(argo.id, "stage_out")
    transfer_for(argo.output_url, context, "output_url").upload(local, argo.output_url)


def advance(argo_id: int) -> None:
    """Make the Argo job's own moves (``next_step.advance_moves``), then hand the next subjob to
    its site, or the Argo job to its final steps.

    The moves Argo makes in a row (SUBJOB_COMPLETED -> SUBJOB_INCREMENTED -> SUBJOB_SUBMITTED)
    are one transaction, a compare-and-set. After a move that took, the next state is known
    without reading it again; after one that lost, it is read again. A re-run after a crash
    finds where the last one stopped and sends the chain it owes again (the receiving steps
    are idempotent).
    """
    argo, subjobs = load(argo_id)
    if argo.graph:
        advance_graph(argo)
        return
    state, current = argo.state, argo.current_subjob
    for _ in range(4):
        at = next_step.Record(argo_id, state, current_subjob=current)
        owed = next_step.for_argo(at, subjobs[current] if current < len(subjobs) else None)
        moves = next_step.advance_moves(state, current, len(subjobs))
        if owed.step != next_step.ADVANCE or moves is None:
            break
        path, position = moves
        if move_argo(argo_id, state, path, current_subjob=position):
            state, current = path[-1], position
        else:  # another worker moved it first: see where it is now
            argo, subjobs = load(argo_id)
            state, current = argo.state, argo.current_subjob
    else:
        return
    if owed.step in next_step.ADVANCE_HANDS_OFF:
        sites = subjobs[current].sites if current < len(subjobs) else None
        chains.send(chains.chain_for(site_handoff.placed(owed, sites)))


def advance_graph(argo: Row) -> None:
    """A graph job's advance: from STAGED_IN its subjobs start running; then every ready
    subjob (CREATED, no parent left, not sent yet: ``graph.CLAIM_READY``, one indexed
    statement) is sent its first run, all in one broker batch; after the last subjob, the
    Argo job's final run. Two of these at once send each subjob once; one whose message is
    lost is the reconciler's (``tasks.reconcile``)."""
    state = argo.state
    moves = next_step.graph_advance_moves(state)
    if moves is not None:
        if move_argo(argo.id, state, moves, machine=states.GRAPH):
            state = moves[-1]
        else:
            state = _state_of(argo.id) or state
    owed = next_step.for_argo(next_step.Record(argo.id, state), None)
    if owed.verdict == next_step.STEP and owed.step in next_step.ADVANCE_HANDS_OFF:
        chains.send(chains.chain_for(owed))
        return
    if state != states.GRAPH_RUNNING:
        return
    with engine().begin() as conn:
        ready = conn.execute(graph.CLAIM_READY, {"argo": argo.id, "now": utcnow()}).all()
    if not ready:
        return
    try:
        runs = [
            site_handoff.placed(
                next_step.for_graph_subjob(
                    state, next_step.Record(r.id, "CREATED", r.site, argo.id), 0
                ),
                r.sites,
            )
            for r in ready
        ]
        with batch_producer(get_settings().broker_url) as producer:
            for run in runs:
                chains.send(chains.chain_for(run), producer)
    except Exception:
        with engine().begin() as conn:  # not sent: the retry of this step sends them
            conn.execute(graph.UNCLAIM, {"ids": [r.id for r in ready]})
        raise


def _fail_argo(argo_id: int, step: str, reason: str) -> None:
    """The Argo job fails where ``step`` was to move it from (argo.advance: wherever it is).
    A graph job running its subjobs does not: their own failures end it."""
    with read_connection() as conn:
        row = conn.execute(_LOAD_ARGO, {"argo_id": argo_id}).first()
    if row is None or states.is_failed(row.state) or row.state in states.ARGO.terminal:
        return
    state, machine = row.state, states.argo_machine(bool(row.graph))
    if state == states.GRAPH_RUNNING:
        return
    if step == next_step.ADVANCE or state == next_step.ARGO_STEPS[step].start:
        failure = states.failed(machine.successors(state)[0])
        move_argo(argo_id, state, failure, reason, machine=machine)


def _retrying(argo_id: int, seconds: float, note: str) -> None:
    """The Argo job waits for its step's retry: say why on the record; the reconciler leaves
    it alone until the retry is due."""
    state = _state_of(argo_id)
    if state is not None:
        due_at = utcnow() + timedelta(seconds=seconds)
        state_store.note(leases.ARGO_JOBS, argo_id, state, note, due_at)


@app.task(bind=True, base=StepTask, name="argo.stage_in")
def stage_in(self: StepTask, argo_id: int) -> None:
    """Copy the Argo job's input_url into the staging area (Figure 1, step 1)."""
    guarded(
        self,
        lambda: _step(argo_id, "argo.stage_in", _stage_in),
        lambda reason: _fail_argo(argo_id, "argo.stage_in", reason),
        lambda seconds, note: _retrying(argo_id, seconds, note),
    )


@app.task(bind=True, base=StepTask, name="argo.advance")
def advance_task(self: StepTask, argo_id: int) -> None:
    """SUBJOB_COMPLETED -> SUBJOB_INCREMENTED -> SUBJOB_SUBMITTED or SUBJOBS_COMPLETED."""
    guarded(
        self,
        lambda: advance(argo_id),
        lambda reason: _fail_argo(argo_id, next_step.ADVANCE, reason),
        lambda seconds, note: _retrying(argo_id, seconds, note),
    )


@app.task(bind=True, base=StepTask, name="argo.stage_out")
def stage_out(self: StepTask, argo_id: int) -> None:
    guarded(
        self,
        lambda: _step(argo_id, "argo.stage_out", _stage_out),
        lambda reason: _fail_argo(argo_id, "argo.stage_out", reason),
        lambda seconds, note: _retrying(argo_id, seconds, note),
    )


@app.task(bind=True, base=StepTask, name="argo.finish")
def finish(self: StepTask, argo_id: int) -> None:
    """STAGED_OUT -> HISTORY; then send any status message a broker hiccup held back."""

    def body() -> None:
        _step(argo_id, "argo.finish", lambda _a, _s: None)
        flush(argo_job_id=argo_id, older_than=get_settings().status_resend_after)

    guarded(self, body, lambda reason: _fail_argo(argo_id, "argo.finish", reason))


@app.task(name="argo.resend_status", ignore_result=True)
def resend_status() -> int:
    """Send the status messages that did not go out (of every job, failed ones too, and the
    REJECTED answers to refused intake messages): the broker was away, or the worker died
    before marking them sent (edgeceleryapp/status_outbox.py, edgeceleryapp/dead_letters.py)."""
    older_than = get_settings().status_resend_after
    return flush(older_than=older_than) + dead_letters.resend_answers(older_than)


@app.task(name="argo.reconcile", ignore_result=True)
def reconcile() -> int:
    """Re-drive the Argo jobs whose owed step made no progress, and the hand-offs to
    candidate sites never made (tasks/reconcile.py); sent by celery beat, single-flight
    across argo workers."""
    if not take_lease(ARGO_SWEEP, "sweep_until", sweep_period()):
        return 0
    return len(reconcile_argo()) + len(reconcile_handoffs())
