"""Deep queue: N subjobs at one site that takes ``max_queued`` at a time; how long the queue
takes to drain against the ideal, and what a deep queue costs the broker.

The real service (a private Redis, the Argo worker with beat, one site worker) with the
``local`` scheduler: each batch job is a detached process running an application that sleeps
``--app-seconds``. The jobs are Balsam-only jobs (``workflows.intake.submit_balsam``): a
subjob at one site and nothing else, so nothing but the site's queue limit is measured (an
Argo job of one subjob would add its own four Argo steps per subjob on the argo worker). Over
the limit a subjob parks with no message (``tasks/admission.py``); the site's tick admits the
next ones as batch jobs end.

Two runs, each on a fresh stack: ``--shallow`` jobs, then ``--jobs`` jobs. In each, Redis
commands per second (``INFO stats`` total_commands_processed) are taken over ``--window``
seconds once intake is done (every subjob parked, admitted or beyond): parked subjobs should
cost the broker nothing, so the rate with 10,000 waiting should be that with 1,000. The drain
time (first submission until the last subjob is JOB_FINISHED) of the deep run is held to the
ideal ``N x app_seconds / max_queued + 2 x poll_interval`` (one tick to admit the first batch,
one to notice the last batch end).

    .venv/bin/python bench/deep_queue.py [--jobs 10000] [--shallow 1000] [--quick]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from common import Figure, parse_args, record
from throughput import cpu_seconds

from edgeceleryapp.devstack import DevStack

SITE = "deep"
TARGET_DRAIN_RATIO = 1.5
TARGET_COMMANDS_RATIO = 1.5
ENDED = ("JOB_FINISHED", "KILLED")


def has_ended(state: str) -> bool:
    return state in ENDED or state.endswith("_FAILED")


def ideal_seconds(jobs: int, app_seconds: float, max_queued: int, poll_interval: float) -> float:
    """The drain time if only the queue limit and the tick stood in the way."""
    return jobs * app_seconds / max_queued + 2 * poll_interval


def sample(client, site_queue: str) -> dict:
    """One look at the run: subjobs by state (parked ones apart), the broker's command count,
    the site queue's length."""
    from sqlalchemy import func, select

    from edgeceleryapp.db import read_scope
    from edgeceleryapp.models import SubJob

    with read_scope() as s:
        rows = s.execute(
            select(SubJob.state, SubJob.waiting_since.is_not(None), func.count()).group_by(
                SubJob.state, SubJob.waiting_since.is_not(None)
            )
        ).all()
    states: dict[str, int] = {}
    waiting = 0
    for state, parked, n in rows:
        states[state] = states.get(state, 0) + n
        waiting += n if parked else 0
    return {
        "t": time.perf_counter(),
        "commands": client.info("stats")["total_commands_processed"],
        "queue": client.llen(site_queue),
        "states": states,
        "waiting": waiting,
    }


def intake_done(look: dict, jobs: int, max_queued: int) -> bool:
    """Every subjob parked, admitted or beyond: none still owed stage-in or preprocess, and at
    most a queue's worth of PREPROCESSED ones not parked (those admitted, about to submit)."""
    states = look["states"]
    early = states.get("CREATED", 0) + states.get("STAGED_IN", 0)
    unparked = states.get("PREPROCESSED", 0) - look["waiting"]
    return sum(states.values()) == jobs and early == 0 and unparked <= max_queued


def app_script(root: Path, seconds: float) -> Path:
    """The application: a shell script that sleeps (an executable takes no arguments here)."""
    script = root / "sleep-app.sh"
    script.write_text(f"#!/bin/sh\nexec sleep {seconds}\n")
    script.chmod(0o755)
    return script


def run(jobs: int, args: argparse.Namespace) -> dict:
    """One stack, ``jobs`` Balsam-only jobs, until every one ended: drain time, the Redis
    command rate over the window after intake, and the samples behind them."""
    import redis

    from edgeceleryapp import applications
    from workflows.intake import submit_balsam

    root = Path(tempfile.mkdtemp(prefix="edgecelery-deepq-"))
    with DevStack.running(
        root,
        (SITE,),
        workers=(),
        poll_interval=args.poll_interval,
        status_interval=args.status_interval,
        site_settings={SITE: {"max_queued": args.max_queued}},
    ) as stack:
        applications.add_app("sleep", SITE, str(app_script(root, args.app_seconds)))
        argo = stack.start_worker("argo", concurrency=1, wait=False)
        site = stack.start_worker(SITE, concurrency=args.concurrency, wait=False)
        stack.wait_for_workers(["argo", SITE])
        client = redis.Redis.from_url(stack.broker_url)
        cpu0 = cpu_seconds([argo.pid, site.pid])
        start = time.perf_counter()
        for i in range(jobs):
            submit_balsam({"name": f"d{i}", "site": SITE, "application": "sleep"})
        submitted = time.perf_counter() - start
        looks: list[dict] = []
        window: tuple[dict, dict] | None = None
        parked_at: dict | None = None
        deadline = start + args.timeout
        while True:
            look = sample(client, f"site.{SITE}")
            looks.append(look)
            ended = sum(n for state, n in look["states"].items() if has_ended(state))
            if parked_at is None and intake_done(look, jobs, args.max_queued):
                parked_at = look
            if window is None and parked_at and look["t"] - parked_at["t"] >= args.window:
                window = (parked_at, look)
            if ended >= jobs or look["t"] > deadline:
                break
            time.sleep(0.5)
        cpu = cpu_seconds([argo.pid, site.pid]) - cpu0
    if look["t"] > deadline:
        raise TimeoutError(f"{ended} of {jobs} subjobs ended after {args.timeout:.0f} s")
    drain = look["t"] - start
    result = {
        "jobs": jobs,
        "submitted_s": submitted,
        "drain_s": drain,
        "ended": look["states"],
        "cpu_s": cpu,
        "parked_s": (parked_at["t"] - start) if parked_at else None,
        "samples": [
            {**{k: v for k, v in s.items() if k != "t"}, "t": round(s["t"] - start, 2)}
            for s in looks
        ],
    }
    if window is None:  # drained before a full window after intake: take what there was
        window = (parked_at or looks[0], look)
    first, last = window
    span = last["t"] - first["t"]
    finished = last["states"].get("JOB_FINISHED", 0) - first["states"].get("JOB_FINISHED", 0)
    result.update(
        window_s=span,
        waiting=first["waiting"],
        commands_per_s=(last["commands"] - first["commands"]) / span if span else 0.0,
        window_drain_per_s=finished / span if span else 0.0,
        after_intake_per_s=(
            (jobs - first["states"].get("JOB_FINISHED", 0)) / (look["t"] - first["t"])
            if look["t"] > first["t"]
            else 0.0
        ),
    )
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=10_000, help="the deep run's subjobs")
    parser.add_argument("--shallow", type=int, default=1_000, help="the reference run's")
    parser.add_argument("--app-seconds", type=float, default=0.2)
    parser.add_argument("--max-queued", type=int, default=20)
    parser.add_argument("--poll-interval", type=float, default=0.25)
    parser.add_argument("--status-interval", type=float, default=30.0)
    parser.add_argument("--concurrency", type=int, default=2, help="the site worker's")
    parser.add_argument(
        "--window", type=float, default=10.0, help="seconds of Redis commands counted"
    )
    parser.add_argument("--timeout", type=float, default=None, help="per run; default by size")
    args = parse_args(parser, "1,000 and 200 subjobs", jobs=1_000, shallow=200)

    if args.timeout is None:
        args.timeout = 300 + 0.3 * max(args.shallow, args.jobs)
    runs = [run(jobs, args) for jobs in (args.shallow, args.jobs)]
    shallow, deep = runs
    ideal = ideal_seconds(args.jobs, args.app_seconds, args.max_queued, args.poll_interval)
    commands_ratio = deep["commands_per_s"] / shallow["commands_per_s"]
    unfinished = sum(r["jobs"] - r["ended"].get("JOB_FINISHED", 0) for r in runs)
    figures = [
        Figure("drain time (first submission to last JOB_FINISHED)", deep["drain_s"], "s"),
        Figure("ideal drain time", ideal, "s"),
        Figure("drain time / ideal", deep["drain_s"] / ideal, "", f"<= {TARGET_DRAIN_RATIO}"),
        Figure("submitting every job (this process)", deep["submitted_s"], "s"),
        Figure("every subjob parked or beyond", deep["parked_s"] or 0.0, "s"),
        Figure("subjobs/s drained after intake (deep run)", deep["after_intake_per_s"], "/s"),
        Figure("subjobs/s drained after intake (shallow run)", shallow["after_intake_per_s"], "/s"),
        Figure("worker CPU per subjob (deep run)", 1000 * deep["cpu_s"] / args.jobs, "ms"),
        Figure(
            f"Redis commands/s, {shallow['waiting']:,} waiting", shallow["commands_per_s"], "/s"
        ),
        Figure(f"Redis commands/s, {deep['waiting']:,} waiting", deep["commands_per_s"], "/s"),
        Figure(
            "deep / shallow Redis commands/s", commands_ratio, "", f"<= {TARGET_COMMANDS_RATIO}"
        ),
        Figure("subjobs that did not reach JOB_FINISHED", unfinished, "", "<= 0"),
    ]
    figures[1].note = (
        f"N x app_seconds / max_queued + 2 x poll_interval = {args.jobs:,} x "
        f"{args.app_seconds:g} / {args.max_queued} + 2 x {args.poll_interval:g}"
    )
    figures[10].note = (
        f"over {shallow['window_s']:.0f} s and {deep['window_s']:.0f} s after intake; subjobs "
        f"drained meanwhile {shallow['window_drain_per_s']:.1f}/s and "
        f"{deep['window_drain_per_s']:.1f}/s"
    )
    shape = (
        f"{args.jobs:,} (and {args.shallow:,}) Balsam jobs at one site, max_queued "
        f"{args.max_queued}, app {args.app_seconds:g} s, local scheduler, site worker "
        f"concurrency {args.concurrency}, poll_interval {args.poll_interval:g} s, "
        f"status_interval {args.status_interval:g} s"
    )
    record(
        "deep_queue" + ("-quick" if args.quick else ""),
        f"Deep queue: {shape}",
        figures,
        {"runs": runs},
    )
    return 1 if unfinished else 0


if __name__ == "__main__":
    sys.exit(main())
