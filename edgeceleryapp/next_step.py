"""What a job is owed next: the one place that knows the order of the steps.

From a record's state (and, for an Argo job, its current subjob's) ``for_subjob`` and
``for_argo`` answer which step is owed and which steps follow it in the same chain, or that the
record is parked (its batch job is in flight: the site's poller will see it end), done, or
stopped (failed or killed: only a retry moves it again). Intake, the Argo steps, the poller,
retry and the operators' commands all ask here before they send a chain; a sweep that re-drives
records whose message was lost needs nothing more than these two functions.

Pure: states in, answers out; no database, no broker (``workflows.chains`` turns an answer into
Celery signatures). The states themselves and the moves allowed between them are in
``edgeceleryapp.states``.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from typing import NamedTuple, Protocol

from edgeceleryapp import states

STEP = "step"
PARKED = "parked"
DONE = "done"
STOPPED = "stopped"


@dataclass(frozen=True)
class Step:
    """A step task: the state it starts from and the state it reaches (walking the path)."""

    name: str
    start: str
    reaches: str
    machine: states.Machine

    @property
    def fails_to(self) -> str:
        """The failure state when this step fails: named after the state it was moving to."""
        return states.failed(self.machine.successors(self.start)[0])


def _steps(machine: states.Machine, *steps: tuple[str, str, str]) -> dict[str, Step]:
    return {name: Step(name, start, reaches, machine) for name, start, reaches in steps}


SITE_STEPS = _steps(
    states.BALSAM,
    ("site.stage_in", "CREATED", "STAGED_IN"),
    ("site.preprocess", "STAGED_IN", "PREPROCESSED"),
    ("site.submit", "PREPROCESSED", "SUBMITTED"),
    ("site.postprocess", "EXECUTION_FINISHED", "POSTPROCESSED"),
    ("site.stage_out", "POSTPROCESSED", "JOB_FINISHED"),
)
# argo.advance is not here: it starts from several states (ADVANCES_FROM) and makes the
# Argo job's own moves (``advance_moves``).
ARGO_STEPS = _steps(
    states.ARGO,
    ("argo.stage_in", "CREATED", "STAGED_IN"),
    ("argo.stage_out", "SUBJOBS_COMPLETED", "STAGED_OUT"),
    ("argo.finish", "STAGED_OUT", "HISTORY"),
)
ADVANCE = "argo.advance"
ADVANCES_FROM = frozenset({"STAGED_IN", "SUBJOB_COMPLETED", "SUBJOB_INCREMENTED"})

# The steps one chain carries: each run ends where the record parks (a batch job in flight),
# where the Argo job takes over, or where the job ends.
RUNS: tuple[tuple[str, ...], ...] = (
    ("argo.stage_in", ADVANCE),
    ("site.stage_in", "site.preprocess", "site.submit"),
    ("site.postprocess", "site.stage_out", ADVANCE),
    ("argo.stage_out", "argo.finish"),
)
# What argo.advance itself sends: the next subjob's first run, or the Argo job's last. Other
# runs are under way when it runs (it is the end of the previous subjob's run).
ADVANCE_HANDS_OFF = frozenset({"site.stage_in", "argo.stage_out"})

_SITE_BY_START = {step.start: step.name for step in SITE_STEPS.values()}
_ARGO_BY_START = {step.start: step.name for step in ARGO_STEPS.values()}
# Where records rest while a step is owed them: what a sweep for lost messages looks at.
SITE_STEP_STARTS = frozenset(_SITE_BY_START)
ARGO_STEP_STARTS = frozenset(_ARGO_BY_START) | ADVANCES_FROM


class SubjobLike(Protocol):
    """What is read of a subjob: a record, or a row of these columns."""

    id: int
    site: str
    state: str
    argo_job_id: int | None
    waiting_since: datetime | None


class ArgoLike(Protocol):
    id: int
    state: str
    current_subjob: int


class Record(NamedTuple):
    """A record known by what its caller holds: a job it has just stored, a few columns."""

    id: int
    state: str
    site: str = ""
    argo_job_id: int | None = None
    current_subjob: int = 0
    waiting_since: datetime | None = None


@dataclass(frozen=True)
class Owed:
    """The answer: ``verdict`` is STEP, PARKED, DONE or STOPPED. For STEP, ``steps`` is the
    owed step first, then those its chain carries after it; ``reason`` says why otherwise."""

    verdict: str
    steps: tuple[str, ...] = ()
    subjob_id: int | None = None
    site: str | None = None
    argo_id: int | None = None
    reason: str = ""

    @property
    def step(self) -> str:
        return self.steps[0] if self.steps else ""

    @property
    def fails_to(self) -> str:
        """The failure state of the record when the owed step cannot even be sent."""
        step = SITE_STEPS.get(self.step) or ARGO_STEPS.get(self.step)
        if step is None:
            raise ValueError(f"{self.step or self.verdict} has no failure state of its own")
        return step.fails_to


def run_from(step: str, in_argo: bool) -> tuple[str, ...]:
    """``step`` and the steps that follow it in one chain; a Balsam-only job (no Argo job)
    ends with its subjob."""
    for run in RUNS:
        if step in run:
            rest = run[run.index(step) :]
            return rest if in_argo else tuple(s for s in rest if s != ADVANCE)
    raise ValueError(f"unknown step {step!r}")


def _ended(machine: states.Machine, state: str) -> Owed | None:
    if states.is_failed(state) or state in (states.KILLED, states.BLOCKED):
        return Owed(STOPPED, reason=f"{machine.name} is {state}")
    if state == machine.path[-1]:
        return Owed(DONE)
    return None


def for_subjob(subjob: SubjobLike, state: str | None = None) -> Owed:
    """What the subjob is owed at its state (or at ``state``, for a caller that sends the
    chain before it commits the move there, as the poller does)."""
    state = state or subjob.state
    ended = _ended(states.BALSAM, state)
    if ended is not None:
        return ended
    if state in states.IN_FLIGHT:
        return Owed(PARKED, subjob_id=subjob.id, site=subjob.site, reason="batch job in flight")
    if state == "PREPROCESSED" and subjob.waiting_since is not None:
        return Owed(PARKED, subjob_id=subjob.id, site=subjob.site, reason="waiting for admission")
    if state not in _SITE_BY_START:  # only passed through inside one step's transaction
        return Owed(
            STOPPED, subjob_id=subjob.id, site=subjob.site, reason=f"no step starts at {state}"
        )
    in_argo = subjob.argo_job_id is not None
    return Owed(
        STEP,
        run_from(_SITE_BY_START[state], in_argo),
        subjob_id=subjob.id,
        site=subjob.site,
        argo_id=subjob.argo_job_id,
    )


def after_batch_end(subjob: SubjobLike, with_work: Collection[str]) -> tuple[list[str], Owed]:
    """The states a subjob whose batch job finished walks at once past EXECUTION_FINISHED, and
    what it is owed then.

    The steps of its resume run that have nothing to do for it (``with_work`` names those that
    have: a postprocess with a script or a children file, a stage out with an output URL) are
    moves, not messages: the poller makes them in the transaction that records the end, as
    Balsam's transitions pass a job without a postprocess straight on. Every state is still
    walked, with its event and status message; what is saved is a task, its lease and its
    commit per empty step (bench/deep_queue.py)."""
    in_argo = subjob.argo_job_id is not None
    state, path = "EXECUTION_FINISHED", []
    for name in run_from(_SITE_BY_START[state], in_argo):
        step = SITE_STEPS.get(name)
        if step is None or name in with_work:
            break
        path += states.walk(states.BALSAM, state, step.reaches)
        state = step.reaches
    owed = for_subjob(subjob, state=state)
    if owed.verdict == DONE and in_argo:  # its Argo job moves on: the run's last step
        owed = Owed(STEP, (ADVANCE,), argo_id=subjob.argo_job_id)
    return path, owed


def for_argo(argo: ArgoLike, current: SubjobLike | None, state: str | None = None) -> Owed:
    """What the Argo job is owed: its own step, or (inside the SUBJOB_* loop) whatever its
    ``current`` subjob (the one at ``argo.current_subjob``) is owed."""
    state = state or argo.state
    ended = _ended(states.ARGO, state)
    if ended is not None:
        return ended
    if state in ADVANCES_FROM:
        return Owed(STEP, (ADVANCE,), argo_id=argo.id)
    if state in _ARGO_BY_START:
        return Owed(STEP, run_from(_ARGO_BY_START[state], True), argo_id=argo.id)
    if state == states.GRAPH_RUNNING:  # each ready subjob is owed its first run
        return Owed(PARKED, argo_id=argo.id, reason="its subjobs run as their parents finish")
    if current is None:
        return Owed(STOPPED, argo_id=argo.id, reason=f"no subjob {argo.current_subjob}")
    owed = for_subjob(current)
    if owed.verdict == DONE:  # its last step ran; the Argo job's move is next
        return Owed(STEP, (ADVANCE,), argo_id=argo.id)
    return owed


def for_graph_subjob(argo_state: str, subjob: SubjobLike, parents_left: int) -> Owed:
    """What a subjob of a graph job is owed: a CREATED one its first run once the Argo job
    runs its subjobs and no parent is left to finish (a join waits for all of them); after
    that, as any subjob."""
    if subjob.state == "CREATED" and states.has_stopped(states.ARGO, argo_state):
        return Owed(STOPPED, subjob_id=subjob.id, site=subjob.site, reason=f"argo is {argo_state}")
    if subjob.state == "CREATED" and argo_state != states.GRAPH_RUNNING:
        return Owed(
            PARKED, subjob_id=subjob.id, site=subjob.site, reason=f"its Argo job is {argo_state}"
        )
    if subjob.state == "CREATED" and parents_left > 0:
        return Owed(
            PARKED,
            subjob_id=subjob.id,
            site=subjob.site,
            reason=f"waiting for {parents_left} parent{'s' if parents_left > 1 else ''}",
        )
    return for_subjob(subjob)


def graph_advance_moves(state: str) -> list[str] | None:
    """The move argo.advance makes on a graph job: from STAGED_IN its subjobs start running;
    None when there is none (SUBJOBS_RUNNING: it sends the ready subjobs' runs; later moves
    are its subjobs' bookkeeping, ``state_store``)."""
    return [states.GRAPH_RUNNING] if state == "STAGED_IN" else None


def advance_moves(state: str, current: int, subjobs: int) -> tuple[list[str], int] | None:
    """The moves argo.advance makes from ``state`` (HUST'17 Figure 4's loop: the next subjob,
    or SUBJOBS_COMPLETED after the last) and the current subjob after them; None when the
    Argo job is not at a state that advance moves."""
    if state == "STAGED_IN":
        return ["SUBJOB_SUBMITTED"], 0
    if state == "SUBJOB_COMPLETED":
        following = "SUBJOB_SUBMITTED" if current + 1 < subjobs else "SUBJOBS_COMPLETED"
        return ["SUBJOB_INCREMENTED", following], current + 1
    if state == "SUBJOB_INCREMENTED":
        return ["SUBJOB_SUBMITTED" if current < subjobs else "SUBJOBS_COMPLETED"], current
    return None
