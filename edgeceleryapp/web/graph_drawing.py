"""A graph job drawn for its page: an inline SVG made on the server, no script library.

Layered: each subjob on the row of its depth (``graph.layers``: roots on top, a child below
its deepest parent), in job order along the row; a line from each parent down to each child;
each box coloured by its subjob's state (the classes ``style.css`` colours). Every text
from the job is escaped. A job too large to read as a picture is not drawn; the table below
it lists every subjob anyway.
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape
from typing import Any

from edgeceleryapp import graph, states

BOX_W, BOX_H = 150, 44
GAP_X, GAP_Y = 24, 46
MARGIN = 10
MOST = 200  # subjobs drawn at most; above it the page says why it shows none
NAME_CHARS = 20

_RUNNING = frozenset({*states.BALSAM_PATH[1:-1]})


def state_class(state: str) -> str:
    """The colour a box takes: done, failed, blocked, killed, running, or waiting."""
    if state == "JOB_FINISHED":
        return "done"
    if states.is_failed(state):
        return "failed"
    if state == states.BLOCKED:
        return "blocked"
    if state == states.KILLED:
        return "killed"
    if state in _RUNNING:
        return "running"
    return "waiting"


def _short(text: str) -> str:
    return text if len(text) <= NAME_CHARS else text[: NAME_CHARS - 1] + "…"


def svg(subjobs: Sequence[dict[str, Any]]) -> str | None:
    """The drawing of subjobs given as ``job_views.show_argo`` shows them (``name``,
    ``state``, ``parents``), or None when there are more than ``MOST``."""
    if not subjobs or len(subjobs) > MOST:
        return None
    parents = {sj["name"]: list(sj.get("parents") or []) for sj in subjobs}
    depth = graph.layers(parents)
    rows: dict[int, list[dict[str, Any]]] = {}
    for sj in subjobs:
        rows.setdefault(depth[sj["name"]], []).append(sj)
    widest = max(len(row) for row in rows.values())
    width = 2 * MARGIN + widest * BOX_W + (widest - 1) * GAP_X
    height = 2 * MARGIN + len(rows) * BOX_H + (len(rows) - 1) * GAP_Y
    place: dict[str, tuple[float, float]] = {}
    for level, row in rows.items():
        used = len(row) * BOX_W + (len(row) - 1) * GAP_X
        left = (width - used) / 2
        for i, sj in enumerate(row):
            place[sj["name"]] = (left + i * (BOX_W + GAP_X), MARGIN + level * (BOX_H + GAP_Y))
    lines = [
        f'<line class="edge" x1="{px + BOX_W / 2:.0f}" y1="{py + BOX_H:.0f}" '
        f'x2="{cx + BOX_W / 2:.0f}" y2="{cy:.0f}"/>'
        for child, (cx, cy) in place.items()
        for px, py in (place[p] for p in parents[child] if p in place)
    ]
    boxes = []
    for sj in subjobs:
        x, y = place[sj["name"]]
        name, state = str(sj["name"]), str(sj["state"])
        boxes.append(
            f'<g class="node {state_class(state)}" data-name="{escape(name)}" '
            f'data-state="{escape(state)}"><title>{escape(name)}: {escape(state)}</title>'
            f'<rect x="{x:.0f}" y="{y:.0f}" width="{BOX_W}" height="{BOX_H}" rx="6"/>'
            f'<text x="{x + BOX_W / 2:.0f}" y="{y + 18:.0f}" class="name">'
            f"{escape(_short(name))}</text>"
            f'<text x="{x + BOX_W / 2:.0f}" y="{y + 35:.0f}" class="state">'
            f"{escape(_short(state))}</text></g>"
        )
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" id="graph-drawing" width="{width:.0f}" '
        f'height="{height:.0f}" viewBox="0 0 {width:.0f} {height:.0f}" role="img" '
        f'aria-label="the job\'s subjobs, parents above their children">'
        f"{''.join(lines)}{''.join(boxes)}</svg>"
    )
