"""What every benchmark shares: a figure (value, target, pass/miss), a printed table, and a
JSON record of the figures that ``bench/report.py`` turns into ``docs/performance.md``.

A figure's target is a predicate written as text (``<= 2 s``, ``>= 0.5``) so the table, the
record and the report all say the same thing. Timings on a shared machine are noisy: compare
figures within one run (ratios), not across runs.
"""

from __future__ import annotations

import argparse
import itertools
import json
import operator
import os
import shlex
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

_OPS = {"<=": operator.le, "<": operator.lt, ">=": operator.ge, ">": operator.gt}


@dataclass
class Figure:
    """One measured number, with the target it is held to (empty: reported, not judged)."""

    name: str
    value: float
    unit: str = ""
    target: str = ""
    note: str = ""

    @property
    def verdict(self) -> str:
        if not self.target:
            return ""
        op, bound = self.target.split()[:2]
        return "pass" if _OPS[op](self.value, float(bound)) else "MISS"


def fmt(value: float) -> str:
    if value == int(value) and abs(value) >= 10:
        return f"{int(value):,}"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 1:
        return f"{value:.2f}"
    return f"{value:.3g}"


def print_table(title: str, figures: list[Figure]) -> None:
    rows = [
        (
            f.name,
            fmt(f.value),
            f.unit,
            f"{f.target} {f.unit}".strip() if f.target else "-",
            f.verdict or "-",
        )
        for f in figures
    ]
    head = ("figure", "measured", "unit", "target", "result")
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(5)]
    print(f"\n{title}")
    print("  ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)))
    print("  ".join("-" * w for w in widths))
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)))
    for f in figures:
        if f.note:
            print(f"  {f.name}: {f.note}")


def parse_args(parser: argparse.ArgumentParser, quick: str, **smaller: float) -> argparse.Namespace:
    """The command line, with ``--quick`` (``quick`` says what it runs): the sizes of
    ``scripts/bench.sh --quick``, each option named in ``smaller`` capped at its value."""
    parser.add_argument("--quick", action="store_true", help=quick)
    args = parser.parse_args()
    if args.quick:
        for name, cap in smaller.items():
            setattr(args, name, min(getattr(args, name), cap))
    return args


def command_line() -> str:
    """How this benchmark was started, to print beside its figures."""
    script = Path(sys.argv[0]).resolve()
    with_root = script.relative_to(ROOT) if script.is_relative_to(ROOT) else script
    return shlex.join([".venv/bin/python", str(with_root), *sys.argv[1:]])


def record(bench: str, title: str, figures: list[Figure], details: dict | None = None) -> None:
    """Print the table and, when ``BENCH_RESULTS`` names a directory, keep the
    figures there as ``<bench>.json`` for the report."""
    print_table(title, figures)
    out = os.environ.get("BENCH_RESULTS")
    if not out:
        return
    path = Path(out) / f"{bench}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        json.dumps(
            {
                "bench": bench,
                "title": title,
                "command": command_line(),
                "figures": [{**asdict(f), "verdict": f.verdict} for f in figures],
                "details": details or {},
            },
            indent=2,
        )
    )


def status_command_figures(times: list[float], elapsed: float, interval: float) -> list[Figure]:
    """How often a site's scheduler was asked: the rate, and the shortest gap between two
    status commands. The poller's status lease is 0.95 of ``status_interval`` (so that tick
    jitter never skips an interval), so two commands may be 28.5 s apart at 30 s: the gap is
    held to the lease, and "one per interval" is a rate, judged only over a window of four
    intervals or more (over a short run the first command, at the start, inflates it)."""
    times = sorted(times)
    judged = elapsed >= 4 * interval
    figures = [
        Figure(
            "status commands per site per minute",
            len(times) / elapsed * 60,
            "",
            f"<= {60 / interval:g}" if judged else "",
            "" if judged else f"only {elapsed:.0f} s observed: not judged",
        )
    ]
    if len(times) >= 2:
        gap = min(b - a for a, b in itertools.pairwise(times))
        figures.append(
            Figure("shortest gap between status commands", gap, "s", f">= {0.95 * interval:g}")
        )
    return figures
