"""The Balsam (subjob) and Argo state machines of the HUST'17 paper, sections 2.1.1 and 2.2.1.

Pure data and functions: every other module asks this one what may follow what. A failure is
named after the state its step was trying to reach (the transition into ``SUBMITTED`` fails to
``SUBMITTED_FAILED``, as Figure 4 says: "each state has a corresponding failure state which can
be set if that state transition fails").

The paper lists the post-processing state once as ``POSTPROCESSING`` (2.1.1) and once as
``POSTPROCESSED`` (2.2.1, ``SUBJOB_IN_POSTPROCESSED``). We use ``POSTPROCESSED``, the form that
matches its meaning ("has completed") and the Argo mirror; ``POSTPROCESSING`` is accepted as an
alias wherever a user types a state.
"""

from __future__ import annotations

from dataclasses import dataclass

FAILED_SUFFIX = "_FAILED"
KILLED = "KILLED"

BALSAM_PATH: tuple[str, ...] = (
    "CREATED",
    "STAGED_IN",
    "PREPROCESSED",
    "SUBMITTED",
    "QUEUED",
    "RUNNING",
    "EXECUTION_FINISHED",
    "POSTPROCESSED",
    "STAGED_OUT",
    "JOB_FINISHED",
)

ARGO_LOOP: tuple[str, ...] = (
    "SUBJOB_SUBMITTED",
    "SUBJOB_IN_PREPROCESSED",
    "SUBJOB_QUEUED",
    "SUBJOB_RUNNING",
    "SUBJOB_RUN_FINISHED",
    "SUBJOB_IN_POSTPROCESSED",
    "SUBJOB_COMPLETED",
    "SUBJOB_INCREMENTED",
)
ARGO_PATH: tuple[str, ...] = (
    "CREATED",
    "STAGED_IN",
    *ARGO_LOOP,
    "SUBJOBS_COMPLETED",
    "STAGED_OUT",
    "HISTORY",
)

# An Argo job whose subjobs name their ``parents`` (a graph) has no current subjob to mirror:
# its subjobs run as their parents finish, in parallel at their sites, while the Argo job rests
# at SUBJOBS_RUNNING; the last subjob to finish moves it to SUBJOBS_COMPLETED. When a subjob
# fails and nothing more can run, it fails to SUBJOBS_COMPLETED_FAILED.
GRAPH_RUNNING = "SUBJOBS_RUNNING"
GRAPH_PATH: tuple[str, ...] = (
    "CREATED",
    "STAGED_IN",
    GRAPH_RUNNING,
    "SUBJOBS_COMPLETED",
    "STAGED_OUT",
    "HISTORY",
)
# A subjob of a graph whose parent (or an earlier ancestor) failed: it never ran and will not
# unless the Argo job is retried. Not a failure of its own, so not named ``X_FAILED``.
BLOCKED = "BLOCKED"

ALIASES = {"POSTPROCESSING": "POSTPROCESSED"}

# A batch job is in flight (the record is parked: only the site's poller moves it).
IN_FLIGHT = ("SUBMITTED", "QUEUED", "RUNNING")
# A batch-level failure is retried by submitting again (a new attempt), never by re-polling.
BATCH_STATES = frozenset({*IN_FLIGHT, "EXECUTION_FINISHED"})

# Which Argo state mirrors a subjob state (2.2.1: "Argo received an update message from Balsam
# that a subjob is in the X state").
ARGO_MIRROR: dict[str, str] = {
    "PREPROCESSED": "SUBJOB_IN_PREPROCESSED",
    "QUEUED": "SUBJOB_QUEUED",
    "RUNNING": "SUBJOB_RUNNING",
    "EXECUTION_FINISHED": "SUBJOB_RUN_FINISHED",
    "POSTPROCESSED": "SUBJOB_IN_POSTPROCESSED",
    "JOB_FINISHED": "SUBJOB_COMPLETED",
}


def failed(state: str) -> str:
    return state + FAILED_SUFFIX


def is_failed(state: str) -> bool:
    return state.endswith(FAILED_SUFFIX)


def failed_target(state: str) -> str:
    """The state whose step failed: ``SUBMITTED_FAILED`` -> ``SUBMITTED``."""
    if not is_failed(state):
        raise ValueError(f"{state} is not a failure state")
    return state[: -len(FAILED_SUFFIX)]


@dataclass(frozen=True)
class Machine:
    """One state machine: a success path, its failure states and the allowed moves."""

    name: str
    path: tuple[str, ...]
    loops: tuple[tuple[str, str], ...] = ()
    # States off the path that only an operator's or a graph's bookkeeping sets (BLOCKED).
    extra: tuple[str, ...] = ()

    @property
    def states(self) -> tuple[str, ...]:
        return (*self.path, *(failed(s) for s in self.path), *self.extra, KILLED)

    @property
    def terminal(self) -> frozenset[str]:
        return frozenset({self.path[-1], KILLED})

    @property
    def failures(self) -> tuple[str, ...]:
        return tuple(failed(s) for s in self.path)

    def normalise(self, state: str) -> str:
        """Upper-case, resolve aliases, and refuse unknown names (for states a user types),
        saying which names there are."""
        name = ALIASES.get(state.strip().upper(), state.strip().upper())
        if name not in self.states:
            raise ValueError(
                f"unknown {self.name} state {state!r}; the states are "
                f"{', '.join((*self.path, *self.extra))} "
                f"and {KILLED}, and each X of them has its failure state X{FAILED_SUFFIX}"
            )
        return name

    def successors(self, state: str) -> tuple[str, ...]:
        """The success states that may follow ``state`` directly."""
        if state not in self.path or state == self.path[-1]:
            return ()
        nxt = [self.path[self.path.index(state) + 1]]
        nxt += [to for frm, to in self.loops if frm == state]
        return tuple(nxt)

    def can_move(self, frm: str, to: str) -> bool:
        """True if ``frm -> to`` is a legal automatic transition."""
        if to == KILLED:
            return frm not in self.terminal
        if is_failed(to):
            return failed_target(to) in self.successors(frm)
        return to in self.successors(frm)

    def rank(self, state: str) -> int:
        """Position on the success path; used to tell 'already done' from 'not yet'."""
        return self.path.index(state)


# A batch job lost to a resource-side failure (node failure, preemption, ...) is submitted
# again as a new attempt (aCT 3.2): the one edge that returns along the path, and only from the
# batch states, with the attempt number raised.
RESUBMIT_EDGES = tuple((state, "PREPROCESSED") for state in IN_FLIGHT)
BALSAM = Machine("subjob", BALSAM_PATH, loops=RESUBMIT_EDGES, extra=(BLOCKED,))
# SUBJOB_INCREMENTED goes back to SUBJOB_SUBMITTED while subjobs remain (Figure 4's loop).
# A graph's states (GRAPH_PATH) are ones an Argo job may take too: a user typing a state
# names either kind of job.
ARGO = Machine(
    "argo",
    ARGO_PATH,
    loops=(("SUBJOB_INCREMENTED", "SUBJOB_SUBMITTED"),),
    extra=(GRAPH_RUNNING, failed(GRAPH_RUNNING), failed("SUBJOBS_COMPLETED")),
)
# The Argo machine of a graph job: the moves its own steps and its subjobs' bookkeeping make.
GRAPH = Machine("argo", GRAPH_PATH)


def argo_machine(graph: bool) -> Machine:
    """The machine an Argo job moves on: the linear SUBJOB_* loop, or a graph's."""
    return GRAPH if graph else ARGO


# The moves only the site's poller makes, for a subjob and for the Argo job that follows it.
# The poller notices a batch job's new state at its tick, so the time recorded is when it
# looked: the change happened then or earlier (up to a poll interval, or more when one tick
# finds a job already ended and walks it through QUEUED and RUNNING at once).
_POLLED_FROM = frozenset({*IN_FLIGHT, "SUBJOB_IN_PREPROCESSED", "SUBJOB_QUEUED", "SUBJOB_RUNNING"})
_POLLED_TO = frozenset(
    {
        "QUEUED",
        "RUNNING",
        "EXECUTION_FINISHED",
        failed("EXECUTION_FINISHED"),
        "SUBJOB_QUEUED",
        "SUBJOB_RUNNING",
        "SUBJOB_RUN_FINISHED",
        failed("SUBJOB_RUN_FINISHED"),
    }
)


def seen_by_poller(frm: str, to: str) -> bool:
    """Whether a move's recorded time is when the poller saw it rather than when it happened."""
    return frm != to and frm in _POLLED_FROM and to in _POLLED_TO


def walk(machine: Machine, frm: str, to: str) -> list[str]:
    """The success states from ``frm`` (exclusive) to ``to`` (inclusive), in order.

    A poll that finds a batch job already finished while we still had it as SUBMITTED walks the
    subjob through QUEUED and RUNNING: the job did pass through them, we saw it late, and every
    JobEvent stays in order.
    """
    i, j = machine.path.index(frm), machine.path.index(to)
    if j < i:
        raise ValueError(f"{to} comes before {frm}")
    return list(machine.path[i + 1 : j + 1])


def batch_end_path(state: str, target: str, failure: bool) -> list[str]:
    """The states a poll walks from ``state`` when a batch job reached ``target``: the job
    passed through QUEUED and RUNNING even if we saw it late. A failure is recorded as the
    failure of the step that was under way."""
    if not failure:
        return walk(BALSAM, state, target)
    path = walk(BALSAM, state, "RUNNING") if state != "RUNNING" else []
    return [*path, failed(target)]


def subjob_retry_state(failed_state: str) -> str:
    """Where a failed subjob restarts: the state before the failed step.

    Batch failures restart at PREPROCESSED so the subjob is submitted again as a new attempt.
    """
    target = failed_target(failed_state)
    if target in BATCH_STATES:
        return "PREPROCESSED"
    i = BALSAM_PATH.index(target)
    return BALSAM_PATH[max(i - 1, 0)]


def argo_state_for_subjob(subjob_state: str) -> str:
    """The Argo loop state that corresponds to a subjob at ``subjob_state``."""
    i = BALSAM_PATH.index(subjob_state)
    for state in reversed(BALSAM_PATH[: i + 1]):
        if state in ARGO_MIRROR:
            return ARGO_MIRROR[state]
    return "SUBJOB_SUBMITTED"


def argo_failure_for(argo_state: str) -> str:
    """The failure state an Argo job takes when the step after ``argo_state`` fails."""
    return failed(ARGO.path[ARGO.path.index(argo_state) + 1])


def argo_retry_state(failed_state: str, graph: bool = False) -> str:
    """Where an Argo job restarts after an Argo-level failure (its own stage in or out)."""
    path = GRAPH_PATH if graph else ARGO_PATH
    target = failed_target(failed_state)
    return path[max(path.index(target) - 1, 0)]


class Readiness:
    READY = "ready"
    DONE = "done"
    WAITING = "waiting"
    STOPPED = "stopped"


def readiness(machine: Machine, start: str, reaches: str, state: str) -> str:
    """Whether a step that moves ``start -> reaches`` should run on a record at ``state``.

    DONE means the step (or a later one) already happened: return at once, which is what makes
    every task safe to run twice. STOPPED means the record failed or was killed: end the chain.
    """
    if state == start:
        return Readiness.READY
    if is_failed(state) or state in (KILLED, BLOCKED):
        return Readiness.STOPPED
    if state not in machine.path and state in GRAPH.path:  # an Argo step on a graph job
        machine = GRAPH
    if machine.rank(state) >= machine.rank(reaches):
        return Readiness.DONE
    return Readiness.WAITING


def has_stopped(machine: Machine, state: str) -> bool:
    """Nothing moves the record any more by itself: it ended, or it failed and waits for a
    retry. Watchers stop following and mail is sent at such a state."""
    return state in machine.terminal or is_failed(state) or state == BLOCKED
