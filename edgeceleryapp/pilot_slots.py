"""How subjobs share a pilot's nodes: a node runs ``slots_per_node`` processes at once; a
single-node subjob takes its ``processes_per_node`` of them (at most a whole node), so several
share a node; a multi-node subjob takes whole nodes. The site worker asks this before it
assigns a subjob to a pilot, and the launcher asks it again to place the subjob it claims:
both count the same way, so an assignment the worker made always fits once earlier subjobs
end.

Pure: numbers in, numbers out.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class Need:
    """What one subjob takes: ``nodes`` nodes, ``slots`` slots on each."""

    nodes: int
    slots: int


def need_of(num_nodes: int, processes_per_node: int, slots_per_node: int) -> Need:
    if num_nodes > 1:
        return Need(num_nodes, slots_per_node)
    return Need(1, max(1, min(processes_per_node, slots_per_node)))


def place(free: list[int], need: Need, slots_per_node: int) -> list[int] | None:
    """The nodes (indexes into ``free``, the free slots of each node) that take ``need``,
    first fit; None when it does not fit now."""
    if need.nodes == 1:
        for i, left in enumerate(free):
            if left >= need.slots:
                return [i]
        return None
    whole = [i for i, left in enumerate(free) if left == slots_per_node]
    return whole[: need.nodes] if len(whole) >= need.nodes else None


def take(free: list[int], nodes: list[int], need: Need) -> None:
    for i in nodes:
        free[i] -= need.slots


def give_back(free: list[int], nodes: list[int], need: Need) -> None:
    for i in nodes:
        free[i] += need.slots


def free_after(nodes: int, slots_per_node: int, held: Iterable[Need]) -> list[int] | None:
    """The free slots of each node once ``held`` are placed in order; None when they do not
    all fit (the worker then assigns nothing more to the pilot)."""
    free = [slots_per_node] * nodes
    for need in held:
        where = place(free, need, slots_per_node)
        if where is None:
            return None
        take(free, where, need)
    return free


def fits_at_all(need: Need, nodes: int, slots_per_node: int) -> bool:
    """Whether an empty pilot of this size could take the subjob."""
    return need.nodes <= nodes and need.slots <= slots_per_node
