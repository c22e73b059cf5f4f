"""Which of a subjob's candidate sites (its ``sites``) runs it: the rule, decided once when the
subjob is handed over (``edgeceleryapp.site_handoff`` reads the candidates' state and records
the choice).

The HUST'17 paper ran ATLAS's second subjob on Mira or on Edison "depending on availability";
this is that rule, written down so an operator can predict it:

1. A site where the application is not registered is never chosen (the whitelist). If no
   candidate registers it, the first candidate is kept: its whitelist check refuses the job
   as it refuses any unregistered application, and says so.
2. The others are ranked by what they can do now, best first:

   - ``ready``: a worker is alive, the breaker is not open, the queue limit has room;
   - ``queue full``: a worker is alive, the breaker is not open, the queue is at its limit
     (the subjob waits for admission there; a full queue drains as its jobs run);
   - ``resting``: a worker is alive but the breaker is open (the site failed its last
     submissions; it is tried again only after the cool-down);
   - ``no worker``: no worker of the site has ticked recently.

3. Among ``ready`` sites: one whose idle nodes (a backfill window, when the scheduler tells)
   fit the subjob's nodes and wall time first, then the most free queue slots (no limit counts
   as most), then the fewest subjobs waiting for admission. Among ``queue full`` sites, the
   fewest waiting for admission. Ties go to the earlier candidate: the order the user wrote
   is their preference.

When no candidate is ``ready``, the best one is chosen anyway and the subjob waits there, as
any subjob waits for a full queue, a resting site or a missing worker; the reason says so.

Pure: a snapshot per candidate in, a ``Choice`` out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from backends.backfill import Shape, Window

READY = "ready"
QUEUE_FULL = "queue full"
RESTING = "resting"
NO_WORKER = "no worker"
NOT_REGISTERED = "not registered"
# The tiers in order of preference.
TIERS = (READY, QUEUE_FULL, RESTING, NO_WORKER)


def fits(window: Window | None, nodes: int, wall_seconds: float | None) -> bool:
    """Whether a subjob of ``nodes`` nodes and ``wall_seconds`` (None: the site's default,
    unknown here) fits the site's idle nodes."""
    if window is None:
        return False
    if wall_seconds is None:
        return nodes <= window.nodes
    return window.holds(Shape(nodes, math.ceil(wall_seconds / 60)))


def best_window(
    windows: list[Window] | None, nodes: int, wall_seconds: float | None
) -> Window | None:
    """The one of a site's windows that speaks for it: the smallest that fits the subjob
    (the others stay free for wider work), else the widest; None without windows."""
    if not windows:
        return None
    fitting = [w for w in windows if fits(w, nodes, wall_seconds)]
    if fitting:
        return min(fitting, key=lambda w: (w.nodes, w.seconds or math.inf))
    return max(windows, key=lambda w: (w.nodes, w.seconds or math.inf))


@dataclass(frozen=True)
class Candidate:
    """What is known of one candidate site at the hand-off (``site_handoff.snapshot``).
    ``free_slots`` None means the site has no queue limit; ``window`` None means its
    scheduler gave no idle-node information."""

    site: str
    registered: bool
    worker_alive: bool
    breaker_open: bool
    free_slots: int | None
    queued: int = 0
    limit: int | None = None
    waiting: int = 0
    window: Window | None = None

    @property
    def tier(self) -> str:
        if not self.registered:
            return NOT_REGISTERED
        if not self.worker_alive:
            return NO_WORKER
        if self.breaker_open:
            return RESTING
        if self.free_slots is not None and self.free_slots <= 0:
            return QUEUE_FULL
        return READY

    def describe(self) -> str:
        """The candidate's state in a few words, for the recorded reason."""
        tier = self.tier
        if tier == NOT_REGISTERED:
            return "application not registered there"
        if tier == NO_WORKER:
            return "no worker alive"
        if tier == RESTING:
            return "breaker open (resting after failed submissions)"
        waiting = f", {self.waiting} waiting for admission" if self.waiting else ""
        if tier == QUEUE_FULL:
            return f"queue full ({self.queued} of {self.limit} queued{waiting})"
        room = "no queue limit" if self.free_slots is None else f"{self.free_slots} slots free"
        if self.window is not None:
            end = "" if self.window.seconds is None else f" for {int(self.window.seconds)} s"
            room += f", {self.window.nodes} nodes idle{end}"
        return f"ready ({room}{waiting})"


@dataclass(frozen=True)
class Choice:
    site: str
    reason: str


def _rank(candidate: Candidate, order: int, nodes: int, wall: float | None) -> tuple:
    tier = TIERS.index(candidate.tier)
    fits_window = fits(candidate.window, nodes, wall)
    free = float("inf") if candidate.free_slots is None else candidate.free_slots
    if candidate.tier == READY:
        return (tier, not fits_window, -free, candidate.waiting, order)
    if candidate.tier == QUEUE_FULL:
        return (tier, candidate.waiting, order)
    return (tier, order)


def choose(
    candidates: list[Candidate], nodes: int = 1, wall_seconds: float | None = None
) -> Choice:
    """The site the rule picks for a subjob of ``nodes`` nodes and ``wall_seconds`` wall time
    (None: the site's default), and why, naming every candidate's state."""
    if not candidates:
        raise ValueError("a choice needs at least one candidate site")
    states = "; ".join(f"{c.site}: {c.describe()}" for c in candidates)
    eligible = [(i, c) for i, c in enumerate(candidates) if c.registered]
    if not eligible:
        first = candidates[0].site
        return Choice(first, f"{first}: no candidate registers the application ({states})")
    _, best = min(eligible, key=lambda ic: _rank(ic[1], ic[0], nodes, wall_seconds))
    if best.tier == READY:
        why = "the best candidate that can take it now"
        if fits(best.window, nodes, wall_seconds):
            why = "its idle nodes fit the subjob"
    else:
        why = f"no candidate can take it now; it waits there ({best.tier})"
    return Choice(best.site, f"{best.site}: {why} ({states})")
