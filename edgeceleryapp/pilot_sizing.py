"""How big the next pilot is: from the work waiting at a site, the site's pilot limits
(``[sites.X.pilots]``) and, when the scheduler can say, the idle nodes and for how long
(backfill windows). The answer carries its reason, recorded with the pilot.

Pure: the site worker (tasks/pilots.py) gathers the numbers; this decides.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from backends.backfill import Shape, Window, choose


@dataclass(frozen=True)
class Limits:
    max_pilots: int
    min_nodes: int
    max_nodes: int
    min_wall_minutes: int
    max_wall_minutes: int
    slots_per_node: int


@dataclass(frozen=True)
class Waiting:
    """The subjobs waiting for a pilot: how many, the slots they need in all, the most nodes
    one needs, the longest wall time one asks for, and their slot-minutes (slots times wall
    minutes, summed) when they give wall times."""

    count: int
    slots: int
    widest: int = 1
    longest_minutes: int = 0
    slot_minutes: int = 0


@dataclass(frozen=True)
class Plan:
    nodes: int
    wall_minutes: int


@dataclass(frozen=True)
class Decision:
    plan: Plan | None
    reason: str


def _clamp(value: int, low: int, high: int) -> int:
    return max(low, min(high, value))


def size_pilot(
    waiting: Waiting,
    free_slots: int,
    active_pilots: int,
    limits: Limits,
    windows: list[Window] | None = None,
) -> Decision:
    """The pilot to submit now, or None, with the reason either way.

    ``free_slots`` are the slots of pilots queued or running not yet assigned: work they will
    take needs no new pilot. ``windows`` None means the scheduler said nothing about idle
    nodes; an empty list means it said there are none.
    """
    if waiting.count == 0:
        return Decision(None, "no subjob waits")
    uncovered = waiting.slots - free_slots
    if uncovered <= 0:
        return Decision(
            None, f"{waiting.count} waiting fit the {free_slots} free slots of the pilots"
        )
    if active_pilots >= limits.max_pilots:
        return Decision(None, f"{active_pilots} pilots active, max_pilots {limits.max_pilots}")
    spn = limits.slots_per_node
    wanted = max(waiting.widest, math.ceil(uncovered / spn))
    nodes = _clamp(wanted, limits.min_nodes, limits.max_nodes)
    # The uncovered share of the slot-minutes, spread over the pilot's slots.
    share = waiting.slot_minutes * uncovered / waiting.slots
    spread = math.ceil(share / (nodes * spn))
    wall = _clamp(
        max(waiting.longest_minutes, spread), limits.min_wall_minutes, limits.max_wall_minutes
    )
    work = f"{waiting.count} waiting ({uncovered} slots not covered by pilots)"
    # Besides the pilot the work asks for, the same cut down to each window (no smaller than
    # the widest subjob and the longest wall time): ``backfill.choose`` picks among them.
    least_nodes = max(waiting.widest, limits.min_nodes)
    least_minutes = max(waiting.longest_minutes, limits.min_wall_minutes)
    shapes = [Shape(nodes, wall)]
    for w in windows or []:
        minutes = wall if w.seconds is None else min(wall, int(w.seconds // 60))
        cut = Shape(min(nodes, w.nodes), minutes)
        if cut.nodes >= least_nodes and cut.wall_minutes >= least_minutes:
            shapes.append(cut)
    choice = choose(shapes, windows, Shape(nodes, wall))
    return Decision(Plan(choice.shape.nodes, choice.shape.wall_minutes), f"{work}; {choice.reason}")
