"""Backfill windows and the pilot shape that fits them best. Pure.

A pilot that fits the nodes a scheduler has idle, for less time than they stay idle, starts
at the next scheduling cycle instead of waiting in the queue behind bigger jobs (PanDA on
Titan sized its batch jobs to the backfill slots this way). The scheduler plug-ins say what
is idle (``Window``: so many nodes for so long, as a staircase: more nodes for a short time,
fewer for longer); ``choose`` picks, from the shapes the pilot sizer proposes, the one that
fits a window with the fewest node-minutes left unused, and says why in words an operator
reads in the job's events.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Window:
    """``nodes`` idle nodes, free for ``seconds`` (None: the scheduler knows no end to it),
    ``where`` they are ("partition debug", "queue default", "server pbsserver")."""

    nodes: int
    seconds: float | None
    where: str = ""

    def holds(self, shape: Shape) -> bool:
        return shape.nodes <= self.nodes and (
            self.seconds is None or shape.wall_minutes * 60 <= self.seconds
        )

    def waste(self, shape: Shape) -> float:
        """Node-minutes of this window the shape leaves unused; a window with no end counts
        only the nodes left idle for the shape's own wall time."""
        minutes = shape.wall_minutes if self.seconds is None else self.seconds / 60
        return self.nodes * minutes - shape.node_minutes

    def describe(self) -> str:
        length = "no known end" if self.seconds is None else f"{int(self.seconds // 60)} min"
        nodes = f"{self.nodes} node{'s' if self.nodes != 1 else ''}"
        text = f"{nodes} for {length}" if self.seconds is not None else f"{nodes} ({length})"
        return f"{text} on {self.where}" if self.where else text


@dataclass(frozen=True)
class Shape:
    """A pilot as it would be submitted: nodes and wall time."""

    nodes: int
    wall_minutes: int

    @property
    def node_minutes(self) -> int:
        return self.nodes * self.wall_minutes

    def describe(self) -> str:
        return f"{self.nodes} node{'s' if self.nodes != 1 else ''} x {self.wall_minutes} min"


@dataclass(frozen=True)
class Choice:
    """The shape to submit, the window it fits (None: none), and why, for the events."""

    shape: Shape
    window: Window | None
    reason: str


def choose(shapes: list[Shape], windows: list[Window] | None, default: Shape) -> Choice:
    """The shape that fits a backfill window with the fewest wasted node-minutes, the
    biggest one on a tie (more work per batch job), the caller's order after that. With no
    information (``windows`` None), no idle nodes, or nothing that fits, the caller's
    ``default`` stands and the reason says which of the three it was."""
    if windows is None:
        return Choice(
            default, None, f"{_kept(default)}: the scheduler gives no backfill information"
        )
    usable = [w for w in windows if w.nodes > 0 and (w.seconds is None or w.seconds > 0)]
    if not usable:
        return Choice(default, None, f"{_kept(default)}: the scheduler reports no idle nodes")
    best: tuple[float, int, int, Shape, Window] | None = None
    for order, shape in enumerate(shapes):
        for window in usable:
            if not window.holds(shape):
                continue
            key = (window.waste(shape), -shape.node_minutes, order, shape, window)
            if best is None or key[:3] < best[:3]:
                best = key
    if best is None:
        widest = max(usable, key=lambda w: (w.nodes, w.seconds is None, w.seconds or 0))
        return Choice(
            default,
            None,
            f"{_kept(default)}: no candidate fits a backfill window "
            f"(the widest is {widest.describe()})",
        )
    shape, window = best[3], best[4]
    return Choice(
        shape, window, f"{shape.describe()} fits the backfill window of {window.describe()}"
    )


def _kept(default: Shape) -> str:
    return f"kept the default {default.describe()}"


def claimed(
    idle: int, claims: list[tuple[float, int]], limit: float | None, where: str
) -> list[Window]:
    """The staircase of ``idle`` nodes that waiting jobs will take: each claim is (seconds
    from now, nodes) of a job expected to start then, assumed to take idle nodes (the most it
    can take from them); ``limit`` caps every window (the partition's longest job)."""
    windows: list[Window] = []
    free = idle
    for seconds, nodes in sorted(claims):
        if free <= 0:
            break
        if seconds > 0:
            windows.append(Window(free, _capped(seconds, limit), where))
        free -= nodes
    if free > 0:
        windows.append(Window(free, limit, where))
    return _tidy(windows)


def per_node(free_for: list[float | None], where: str) -> list[Window]:
    """The staircase of idle nodes each free for its own time (None: no known end): for
    each length, the nodes free at least that long."""
    lengths = sorted({t for t in free_for if t is None or t > 0}, key=_longest_first)
    windows = []
    for length in lengths:
        count = sum(1 for t in free_for if t is None or (length is not None and t >= length))
        windows.append(Window(count, length, where))
    return _tidy(windows)


def _longest_first(seconds: float | None) -> float:
    return float("-inf") if seconds is None else -seconds


def _capped(seconds: float, limit: float | None) -> float:
    return seconds if limit is None else min(seconds, limit)


def _tidy(windows: list[Window]) -> list[Window]:
    """Windows no other one covers (as many nodes or more, for as long or longer), widest
    first."""

    def covers(a: Window, b: Window) -> bool:
        longer = a.seconds is None or (b.seconds is not None and a.seconds >= b.seconds)
        return a != b and a.nodes >= b.nodes and longer

    kept = [w for w in windows if w.nodes > 0 and not any(covers(o, w) for o in windows)]
    return sorted(set(kept), key=lambda w: -w.nodes)


def after_taking(windows: list[Window], nodes: int) -> list[Window]:
    """The windows once a job of ``nodes`` nodes has been sent to them: each made that much
    smaller (where it lands is the scheduler's business, so every window is taken to lose
    them), those left with no node dropped."""
    return [Window(w.nodes - nodes, w.seconds, w.where) for w in windows if w.nodes > nodes]
