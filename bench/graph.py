"""Graph jobs at size: one Argo job of 1,000 subjobs (a root, a fan-out of 899 children of it,
and a chain of 100 below it) stored, validated and driven to HISTORY on the instant scheduler
by real workers; and the cost of deciding readiness per step, for ten jobs of ten chained
subjobs against the chain of 100 inside the 1,000-subjob job.

A decision is what a finishing subjob costs its graph: the move that finishes it (lowering
its children's count of parents left, the Argo job's counters) and argo.advance's claim of the
ready subjobs, one indexed statement each. It must not grow with the size of the job.

    .venv/bin/python bench/graph.py [--quick]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from common import ROOT, Figure, parse_args, record

from edgeceleryapp.devstack import DevStack, wait_for

FAN_OUT = 899
CHAIN = 100
SITES = ("alpha", "beta")
TO_POSTPROCESSED = ["STAGED_IN", "PREPROCESSED", "SUBMITTED", "QUEUED", "RUNNING"]


def big_job(name: str) -> dict:
    """gen; w0..w898 each a child of gen; c0..c99 a chain below gen: 1,000 subjobs."""
    subjobs = [{"name": "gen", "site": "alpha", "application": "true", "parents": []}]
    subjobs += [
        {"name": f"w{i}", "site": SITES[i % 2], "application": "true", "parents": ["gen"]}
        for i in range(FAN_OUT)
    ]
    subjobs += [
        {
            "name": f"c{i}",
            "site": SITES[i % 2],
            "application": "true",
            "parents": [f"c{i - 1}" if i else "gen"],
        }
        for i in range(CHAIN)
    ]
    return {"name": name, "subjobs": subjobs}


def chain_job(name: str, length: int) -> dict:
    return {
        "name": name,
        "subjobs": [
            {
                "name": f"c{i}",
                "site": "alpha",
                "application": "true",
                "parents": [f"c{i - 1}"] if i else [],
            }
            for i in range(length)
        ],
    }


def decisions(argo_id: int, chain_names: list[str]) -> list[float]:
    """Seconds per decision along ``chain_names`` of a stored, started graph job: each subjob
    walked to EXECUTION_FINISHED untimed, then timed: its finishing move and the claim of
    what became ready."""
    from sqlalchemy import select

    from edgeceleryapp import graph
    from edgeceleryapp.db import engine, read_connection
    from edgeceleryapp.models import SubJob, utcnow
    from edgeceleryapp.state_store import move_subjob

    with read_connection() as conn:
        ids = dict(
            conn.execute(select(SubJob.name, SubJob.id).where(SubJob.argo_job_id == argo_id)).all()
        )
    timings = []
    for name in chain_names:
        ident = ids[name]
        assert move_subjob(ident, "CREATED", [*TO_POSTPROCESSED, "EXECUTION_FINISHED"])
        assert move_subjob(ident, "EXECUTION_FINISHED", ["POSTPROCESSED"])
        start = time.perf_counter()
        assert move_subjob(ident, "POSTPROCESSED", ["STAGED_OUT", "JOB_FINISHED"])
        with engine().begin() as conn:
            conn.execute(graph.CLAIM_READY, {"argo": argo_id, "now": utcnow()}).all()
        timings.append(time.perf_counter() - start)
    return timings


def started_graph(message: dict) -> int:
    """Stored (validated on the way) and moved to SUBJOBS_RUNNING with its roots claimed, as
    argo.stage_in and argo.advance would."""
    from edgeceleryapp import graph
    from edgeceleryapp.db import engine
    from edgeceleryapp.models import utcnow
    from edgeceleryapp.state_store import move_argo
    from edgeceleryapp.states import GRAPH
    from workflows.intake import submit_argo

    argo_id = submit_argo(message, start=False)
    assert move_argo(argo_id, "CREATED", ["STAGED_IN", "SUBJOBS_RUNNING"], machine=GRAPH)
    with engine().begin() as conn:
        conn.execute(graph.CLAIM_READY, {"argo": argo_id, "now": utcnow()}).all()
    return argo_id


def measure_decisions(small_jobs: int) -> tuple[float, float, float]:
    """Median ms per decision: ten-subjob chains, the 1,000-subjob job's chain of 100; and
    the seconds to validate and store the 1,000-subjob job."""
    small: list[float] = []
    for j in range(small_jobs):
        small += decisions(started_graph(chain_job(f"small{j}", 10)), [f"c{i}" for i in range(10)])
    start = time.perf_counter()
    big = started_graph(big_job("big-decisions"))
    stored = time.perf_counter() - start
    decisions(big, ["gen"])  # the fan-out: 900 children become ready at once
    large = decisions(big, [f"c{i}" for i in range(CHAIN)])
    return statistics.median(small) * 1000, statistics.median(large) * 1000, stored


def drive(stack: DevStack, concurrency: int) -> tuple[float, str]:
    """The 1,000-subjob job through real workers on the instant scheduler: seconds from
    submission to its end, and the state it ended in."""
    from edgeceleryapp import applications
    from edgeceleryapp.db import read_scope
    from edgeceleryapp.models import ArgoJob
    from workflows.intake import submit_argo

    for site in SITES:
        applications.add_app("true", site, "/bin/true")
    stack.start_worker("argo", concurrency=concurrency, wait=False)
    for site in SITES:
        stack.start_worker(site, app="bench.instant_app", concurrency=concurrency, wait=False)
    stack.wait_for_workers(["argo", *SITES])
    start = time.perf_counter()
    argo_id = submit_argo(big_job("big"))

    def ended() -> str | None:
        with read_scope() as s:
            state = s.get(ArgoJob, argo_id).state
        return state if state in ("HISTORY", "KILLED") or state.endswith("_FAILED") else None

    state = wait_for(ended, 1800, "the 1,000-subjob graph job to end", 0.5)
    return time.perf_counter() - start, state


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small-jobs", type=int, default=10)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--poll-interval", type=float, default=0.2)
    args = parse_args(parser, "the same job; fewer ten-subjob chains", small_jobs=10)
    root = Path(tempfile.mkdtemp(prefix="edgecelery-graph-"))
    site_settings = {site: {"scheduler": "bench.instant_app:InstantScheduler"} for site in SITES}
    with DevStack.running(
        root,
        SITES,
        workers=(),
        env_extra={"PYTHONPATH": str(ROOT)},
        poll_interval=args.poll_interval,
        status_interval=30.0,
        site_settings=site_settings,
    ) as stack:
        small_ms, large_ms, stored_s = measure_decisions(args.small_jobs)
        seconds, state = drive(stack, args.concurrency)
    record(
        "graph",
        "Graph jobs: 1,000 subjobs, readiness per step",
        [
            Figure("decision per step, 10 jobs x 10 subjobs (median)", small_ms, "ms"),
            Figure(
                "decision per step, chain of 100 in the 1,000-subjob job (median)",
                large_ms,
                "ms",
                target=f"<= {2 * small_ms:.2f}",
                note="twice the 10-subjob figure: the cost does not grow with the job",
            ),
            Figure("validate and store the 1,000-subjob job", stored_s, "s"),
            Figure("1,000-subjob job to its end (instant scheduler)", seconds, "s", note=state),
        ],
    )
    return 0 if state == "HISTORY" and large_ms <= 2 * small_ms else 1


if __name__ == "__main__":
    raise SystemExit(main())
