"""The job page's drawing of a graph job (``edgeceleryapp/web/graph_drawing.py``): layered,
parents above children, a line per edge, each box classed by its state, text escaped."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from edgeceleryapp.web import graph_drawing

NS = {"svg": "http://www.w3.org/2000/svg"}


def sj(name: str, state: str, *parents: str) -> dict:
    return {"name": name, "state": state, "parents": list(parents)}


DIAMOND = [
    sj("gen", "JOB_FINISHED"),
    sj("left", "RUNNING", "gen"),
    sj("right", "SUBMITTED_FAILED", "gen"),
    sj("join", "BLOCKED", "left", "right"),
]


def boxes(svg: str) -> dict[str, tuple[str, float, float]]:
    """Each subjob's (class, x, y) as drawn."""
    root = ET.fromstring(svg)
    out = {}
    for g in root.findall("svg:g", NS):
        rect = g.find("svg:rect", NS)
        out[g.get("data-name")] = (g.get("class"), float(rect.get("x")), float(rect.get("y")))
    return out


def test_diamond_is_drawn_in_layers_coloured_by_state():
    svg = graph_drawing.svg(DIAMOND)
    drawn = boxes(svg)
    assert {name: cls for name, (cls, _, _) in drawn.items()} == {
        "gen": "node done",
        "left": "node running",
        "right": "node failed",
        "join": "node blocked",
    }
    assert drawn["gen"][2] < drawn["left"][2] == drawn["right"][2] < drawn["join"][2]
    assert drawn["left"][1] < drawn["right"][1]  # the job's order along a row
    assert len(ET.fromstring(svg).findall("svg:line", NS)) == 4


def test_text_is_escaped_and_long_names_cut():
    svg = graph_drawing.svg([sj("<b>&" + "x" * 40, "CREATED")])
    assert "<b>" not in svg and "&lt;b&gt;&amp;" in svg
    (name,) = [t.text for t in ET.fromstring(svg).iter() if t.get("class") == "name"]
    assert len(name) == graph_drawing.NAME_CHARS and name.endswith("…")
    assert boxes(svg)["<b>&" + "x" * 40][0] == "node waiting"


def test_a_huge_job_is_not_drawn():
    many = [sj(f"s{i}", "CREATED") for i in range(graph_drawing.MOST + 1)]
    assert graph_drawing.svg(many) is None
    assert graph_drawing.svg(many[:-1]) is not None
