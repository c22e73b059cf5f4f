"""Deep queue: N subjobs at one site that takes ``max_queued`` at a time; how long the queue
takes to drain against the ideal, and what a deep queue costs the broker.

The real service (a private Redis, the Argo worker with beat, one site worker) with the
``local`` scheduler: each batch job is a detached process running an application that sleeps
``--app-seconds``. The jobs are Balsam-only jobs (``workflows.intake.submit_balsam``): a
subjob at one site and nothing else, so nothing but the site's queue limit is measured (an
Argo job of one subjob would add its own four Argo steps per subjob on the argo worker). Over
the limit a subjob parks with no message (``tasks/admission.py``); the site's tick admits the
next ones as batch jobs end.

Two runs, each on a fresh stack: ``--shallow`` jobs, then ``--jobs`` jobs. In each, the site
rests while the jobs arrive (its circuit breaker set far into the future, as failed
submissions would), so once intake is done every subjob is parked and the queue holds still.
Redis commands per second (``INFO stats`` total_commands_processed) are taken then, over
``--window`` seconds: parked subjobs should cost the broker nothing, so the rate with 10,000
waiting should be that with 1,000. Then the site opens (the breaker closes, as a successful
submission closes it) and the drain time (site opened until the last subjob ended) is held to
the ideal ``N x app_seconds / max_queued + 2 x poll_interval`` (one tick to admit the first
batch, one to notice the last batch end).

A third run gives the floor no implementation built on one Celery task per step can beat on
this machine: the same number of plain Celery chains of no-op tasks, one per task the drain
sends (submit: the postprocess and stage out, with nothing to do, are walked by the tick),
through the same broker and a worker of the same concurrency (``bench/ceiling_app.py``).

The poll interval is short (0.05 s) because the application is: a batch job's end is seen
at the first tick after it, so with 0.2 s runs and a 0.25 s tick each slot waited for the
second tick after its submission, 0.5 s a cycle instead of 0.2 (``--poll-interval 0.25``
shows it). A tick reads the exit-code files of the jobs in flight and a few indexed counts;
its cost is printed (worker CPU while the queue waits).

    .venv/bin/python bench/deep_queue.py [--jobs 10000] [--shallow 1000] [--quick]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from common import Figure, parse_args, record
from throughput import cpu_seconds

from edgeceleryapp.devstack import DevStack

SITE = "deep"
TARGET_DRAIN_RATIO = 1.5
TARGET_COMMANDS_RATIO = 1.5
ENDED = ("JOB_FINISHED", "KILLED")
# The tasks a subjob still owes once it is preprocessed: its submit. Its postprocess and stage
# out have nothing to do (no script, no output URL): the tick that sees its end walks them.
DRAIN_TASKS = 1
# Seconds the held queue must stay unchanged before its broker commands are counted.
SETTLE = 3.0


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


def app_script(root: Path, seconds: float) -> Path:
    """The application: a shell script that sleeps (an executable takes no arguments here)."""
    script = root / "sleep-app.sh"
    script.write_text(f"#!/bin/sh\nexec sleep {seconds}\n")
    script.chmod(0o755)
    return script


def hold(site: str) -> None:
    """Rest the site as its circuit breaker would, far into the future: every subjob parks."""
    from sqlalchemy import update

    from edgeceleryapp.db import session_scope
    from edgeceleryapp.models import SiteMonitor
    from edgeceleryapp.site_monitor import ensure_monitor

    ensure_monitor(site)
    with session_scope() as s:
        s.execute(
            update(SiteMonitor)
            .where(SiteMonitor.site == site)
            .values(submit_failures=1, breaker_until=datetime(2100, 1, 1))
        )


def watch(client, until: Callable[[dict], bool], deadline: float, looks: list[dict]) -> dict:
    """Sample the run every half second until ``until`` holds for a sample: that sample."""
    while True:
        look = sample(client, f"site.{SITE}")
        looks.append(look)
        if until(look):
            return look
        if look["t"] > deadline:
            ended = sum(n for state, n in look["states"].items() if has_ended(state))
            raise TimeoutError(f"{ended} subjobs ended, states {look['states']}")
        time.sleep(0.5)


def settle(client, deadline: float, looks: list[dict]) -> dict:
    """Wait until the held queue is still: the same states in two looks ``SETTLE`` seconds
    apart and nothing on the site queue (the last preprocess steps' messages and status
    messages have gone out), so the window counts only what waiting costs."""
    before = sample(client, f"site.{SITE}")
    while True:
        time.sleep(SETTLE)
        look = sample(client, f"site.{SITE}")
        looks.append(look)
        if look["states"] == before["states"] and look["queue"] == 0:
            return look
        if look["t"] > deadline:
            raise TimeoutError(f"the held queue never settled: {look['states']}")
        before = look


def run(jobs: int, args: argparse.Namespace) -> dict:
    """One stack, ``jobs`` Balsam-only jobs. The site rests (``hold``) while they arrive, so
    every subjob parks and the queue holds still; the Redis command rate is taken then, over
    ``--window`` seconds. Then the site opens and the queue drains until every subjob ended."""
    import redis

    from edgeceleryapp import applications
    from edgeceleryapp.site_monitor import submission_succeeded
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
        hold(SITE)
        start = time.perf_counter()
        for i in range(jobs):
            submit_balsam({"name": f"d{i}", "site": SITE, "application": "sleep"})
        submitted = time.perf_counter() - start
        looks: list[dict] = []
        deadline = start + args.timeout
        parked = watch(client, lambda look: look["waiting"] == jobs, deadline, looks)
        settled = settle(client, deadline, looks)
        first = sample(client, f"site.{SITE}")
        idle0 = cpu_seconds([argo.pid, site.pid])
        time.sleep(args.window)  # the measurement itself: what Redis does while they wait
        last = sample(client, f"site.{SITE}")
        idle = cpu_seconds([argo.pid, site.pid]) - idle0
        cpu0 = cpu_seconds([argo.pid, site.pid])
        submission_succeeded(SITE)  # the site opens: its next tick admits the first ones
        opened = time.perf_counter()
        look = watch(
            client,
            lambda look: sum(n for s, n in look["states"].items() if has_ended(s)) >= jobs,
            deadline,
            looks,
        )
        cpu = cpu_seconds([argo.pid, site.pid]) - cpu0
    span = last["t"] - first["t"]
    return {
        "jobs": jobs,
        "submitted_s": submitted,
        "parked_s": parked["t"] - start,
        "settled_s": settled["t"] - start,
        "drain_s": look["t"] - opened,
        "total_s": look["t"] - start,
        "ended": look["states"],
        "cpu_s": cpu,
        "idle_cpu_share": idle / (last["t"] - first["t"]),
        "window_s": span,
        "waiting": first["waiting"],
        "held_states": first["states"],
        "commands_per_s": (last["commands"] - first["commands"]) / span,
        "samples": [
            {**{k: v for k, v in s.items() if k != "t"}, "t": round(s["t"] - start, 2)}
            for s in looks
        ],
    }


def run_floor(jobs: int, args: argparse.Namespace) -> dict:
    """What Celery alone takes for the drain's tasks: ``jobs`` plain chains of no-op tasks on
    the site queue, one per task a subjob still owes when the site opens (``DRAIN_TASKS``),
    through the same broker and a worker of the same concurrency; no batch job, no database,
    no status message."""
    import redis
    from celery import chain

    from bench.ceiling_app import app

    root = Path(tempfile.mkdtemp(prefix="edgecelery-deepq-floor-"))
    with DevStack.running(root, (SITE,), workers=()) as stack:
        stack.start_worker(
            "floor", app="bench.ceiling_app", queue=f"site.{SITE}", concurrency=args.concurrency
        )
        app.conf.broker_url = stack.broker_url  # celeryconfig read the first stack's
        client = redis.Redis.from_url(stack.broker_url)
        q = f"site.{SITE}"
        start = time.perf_counter()
        for i in range(jobs):
            steps = [
                app.signature("ceiling.noop", args=(i,), queue=q, immutable=True)
                for _ in range(DRAIN_TASKS - 1)
            ]
            steps.append(app.signature("ceiling.done", args=(i,), queue=q, immutable=True))
            chain(*steps).apply_async()
        deadline = start + args.timeout
        while int(client.get("ceiling:done") or 0) < jobs:
            if time.perf_counter() > deadline:
                raise TimeoutError("plain-Celery chains did not finish")
            time.sleep(0.2)
        return {"jobs": jobs, "drain_s": time.perf_counter() - start}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=10_000, help="the deep run's subjobs")
    parser.add_argument("--shallow", type=int, default=1_000, help="the reference run's")
    parser.add_argument("--app-seconds", type=float, default=0.2)
    parser.add_argument("--max-queued", type=int, default=20)
    parser.add_argument("--poll-interval", type=float, default=0.05)
    parser.add_argument("--status-interval", type=float, default=30.0)
    parser.add_argument("--concurrency", type=int, default=2, help="the site worker's")
    parser.add_argument(
        "--window", type=float, default=20.0, help="seconds of Redis commands counted"
    )
    parser.add_argument("--timeout", type=float, default=None, help="per run; default by size")
    args = parse_args(parser, "1,000 and 200 subjobs", jobs=1_000, shallow=200)

    if args.timeout is None:
        args.timeout = 300 + 0.3 * max(args.shallow, args.jobs)
    runs = [run(jobs, args) for jobs in (args.shallow, args.jobs)]
    shallow, deep = runs
    floor = run_floor(args.jobs, args)
    ideal = ideal_seconds(args.jobs, args.app_seconds, args.max_queued, args.poll_interval)
    commands_ratio = deep["commands_per_s"] / shallow["commands_per_s"]
    unfinished = sum(r["jobs"] - r["ended"].get("JOB_FINISHED", 0) for r in runs)
    figures = [
        Figure("drain time (site opened to last subjob ended)", deep["drain_s"], "s"),
        Figure("ideal drain time", ideal, "s"),
        Figure("drain time / ideal", deep["drain_s"] / ideal, "", f"<= {TARGET_DRAIN_RATIO}"),
        Figure("plain-Celery floor: the drain's tasks alone", floor["drain_s"], "s"),
        Figure("plain-Celery floor / ideal", floor["drain_s"] / ideal, ""),
        Figure("drain time / plain-Celery floor", deep["drain_s"] / floor["drain_s"], ""),
        Figure("first submission to last subjob ended (deep run)", deep["total_s"], "s"),
        Figure("submitting every job (this process)", deep["submitted_s"], "s"),
        Figure("every subjob parked", deep["parked_s"], "s"),
        Figure(
            "worker CPU per subjob in the drain (deep run)", 1000 * deep["cpu_s"] / args.jobs, "ms"
        ),
        Figure(
            f"worker CPU while {deep['waiting']:,} wait (ticks included)",
            100 * deep["idle_cpu_share"],
            "% of a core",
        ),
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
    figures[3].note = (
        f"{args.jobs:,} chains of {DRAIN_TASKS} no-op task{'s' if DRAIN_TASKS > 1 else ''} "
        "on the site queue, a worker of "
        f"concurrency {args.concurrency}, the service's Celery settings (bench/ceiling_app.py)"
    )
    figures[13].note = (
        f"over {shallow['window_s']:.0f} s and {deep['window_s']:.0f} s with the queue held "
        "still (the site resting, every subjob parked)"
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
        {"runs": runs, "floor": floor},
    )
    return 1 if unfinished else 0


if __name__ == "__main__":
    sys.exit(main())
