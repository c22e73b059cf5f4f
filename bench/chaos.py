"""Chaos: N Argo jobs at three sites through the real service while its worker process groups
and its Redis are SIGKILLed at random moments; then whether every job still ended, and ended
once.

Most jobs are linear, 2 subjobs (one per plain site); every ``--graph-every``-th is a graph job, a
diamond of 4 subjobs (``gen`` at one site, ``left`` and ``right`` at both, ``join`` after both),
whose branches run in parallel and whose join waits for both. Every ``--pilot-every``-th
linear job runs its second subjob at a third site whose subjobs run inside pilots.

Faults, at seeded random moments of a window that starts once the jobs are submitted: K
SIGKILLs of a random worker's process group (the Celery parent and its pool), each worker
started again; Redis SIGKILLed and started again on its directory (the AOF keeps the
messages), and restarts that lose every message (the AOF deleted first). Settings are the
shipped defaults but for the poll intervals, which are printed.

What it counts, and how:

- batch submissions per batch name, through a PATH shim: the ``local`` scheduler submits a
  batch job by running ``setsid -f`` (``backends.batchscript.start_detached``), and a shim named
  ``setsid`` first in the workers' PATH logs the job's name before running the real one. A
  second submission under one name starts nothing here (the wrapper's pid file is written with
  noclobber), but a real batch system would run it twice, so it counts;
- application runs per subjob: the application is a script that logs its subjob's id;
- state regressions, from the JobEvents (``regressions``);
- Argo jobs not in HISTORY at the deadline (``--deadline`` seconds after the last fault);
- the time from the last fault to the last job done.

Exit status 1 if a job was lost, submitted twice, ran twice or moved backwards.

    .venv/bin/python bench/chaos.py [--jobs 300] [--kills 40] [--aof-restarts 2]
        [--empty-restarts 1] [--seed S] [--deadline 180] [--window S] [--downtime 0.5]
        [--graph-every 3] [--pilot-every 4] [--poll-interval 1] [--status-interval 30] [--quick]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import shutil
import signal
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from shlex import quote

from common import Figure, parse_args, record

from edgeceleryapp.devstack import DevStack, RedisServer

SITES = ("s0", "s1", "p0")
PLAIN = SITES[:2]  # one batch job per subjob
PILOT_SITE = SITES[2]  # subjobs run inside pilots (local batch jobs running the launcher)
# Pilot settings of p0; everything else is the shipped default.
PILOTS = {"enabled": True, "max_pilots": 2, "slots_per_node": 4, "idle_exit_seconds": 5.0}
SUBJOBS = 2
TARGET_RECOVERY = 180.0  # seconds from the last fault to the last job done (issue 11)
KILL, AOF, EMPTY = "kill", "redis-aof", "redis-empty"

APP = """#!/bin/sh
printf '%s %s\\n' "$EDGECELERY_SUBJOB_ID" "$$" >> {log}
"""

# $5 is the local scheduler's mark and $6 the batch job's pid file, named after the job.
SHIM = """#!/bin/sh
if [ "$5" = {mark} ]; then
  printf '%s %s\\n' "$(basename "$6" .pid)" "$$" >> {log}
fi
exec {real} "$@"
"""


@dataclass(frozen=True)
class Fault:
    """One fault of the plan: when, what, and whom."""

    at: float  # seconds after the window opened
    kind: str
    worker: str = ""  # the worker a KILL hits


def plan(args: argparse.Namespace, rng: random.Random, workers: list[str]) -> list[Fault]:
    """Every fault drawn up front from the seed, so a seed names one run's faults."""
    kinds = [KILL] * args.kills + [AOF] * args.aof_restarts + [EMPTY] * args.empty_restarts
    rng.shuffle(kinds)
    times = sorted(rng.uniform(0, args.window) for _ in kinds)
    return [
        Fault(at, kind, rng.choice(workers) if kind == KILL else "")
        for at, kind in zip(times, kinds, strict=True)
    ]


def supervise(stack: DevStack) -> list[str]:
    """Start again every worker that exited on its own, as the service's systemd units do
    (``Restart=on-failure``, examples/systemd/): Celery's worker can end with "Unrecoverable
    error" when Redis goes away under it (kombu's Redis transport, while it restores its
    unacknowledged messages). Its process group goes first, so no pool child is left behind.
    The names of the workers started again."""
    restarted = []
    for name, worker in stack.workers.items():
        if worker.process is not None and worker.process.poll() is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(worker.process.pid, signal.SIGKILL)
            worker.start()
            restarted.append(name)
    return restarted


def sleep_supervised(seconds: float, stack: DevStack, exits: list[str]) -> None:
    """Sleep ``seconds``, looking after the workers every half second."""
    end = time.monotonic() + seconds
    while (left := end - time.monotonic()) > 0:
        time.sleep(min(0.5, left))
        exits += supervise(stack)


def inject(fault: Fault, stack: DevStack, server: RedisServer, downtime: float) -> None:
    """SIGKILL, stay down ``downtime`` seconds, start again (a worker without waiting for it to
    answer: it may be Redis that is down)."""
    if fault.kind == KILL:
        worker = stack.workers[fault.worker]
        worker.kill()
        time.sleep(downtime)
        worker.start()
    else:
        server.kill()
        time.sleep(downtime)
        server.start(empty=fault.kind == EMPTY)


def write_script(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(0o755)
    return path


def counts(log: Path) -> Counter[str]:
    """How often each key (the first word of a line) was logged."""
    if not log.exists():
        return Counter()
    return Counter(line.split()[0] for line in log.read_text().splitlines() if line.strip())


def regressions(records: Iterable[list[tuple[str, str, bool]]], kind: str) -> int:
    """Moves that went backwards: a move from a state the record was not in, or to a success
    state at or before one it had reached. The Argo loop (``SUBJOB_INCREMENTED`` ->
    ``SUBJOB_SUBMITTED``, the next subjob) is the normal path, and a move out of a failure
    state is a retry, and so is a move ``job_events`` marks excused (a pilot giving back a
    subjob it never started); a subjob's resubmission edge is not excused: it follows a batch
    failure, and this bench injects none (the application always exits 0, batch jobs outlive
    workers). ``kind`` is "argo", "graph" (a graph job's Argo record) or "subjob"."""
    from edgeceleryapp import states

    machine = {"argo": states.ARGO, "graph": states.GRAPH}.get(kind, states.BALSAM)
    allowed = set(machine.loops) if kind != "subjob" else set()
    found = 0
    for moves in records:
        state, reached = None, -1
        for frm, to, excused in moves:
            if frm == to == state:  # a note that keeps the state (a re-drive), not a move
                continue
            if state is not None and frm != state:
                found += 1
            if to in machine.path:
                rank = machine.rank(to)
                back = rank <= reached and (frm, to) not in allowed and not excused
                if back and not states.is_failed(frm):
                    found += 1
                reached = rank  # counted once: the moves on from there are forward again
            state = to
    return found


def job_events() -> dict[str, list[list[tuple[str, str, bool]]]]:
    """Every record's moves in the order they were committed: linear Argo jobs', graph jobs',
    subjobs'. A pilot that ended giving back a subjob it never started (SUBMITTED ->
    PREPROCESSED, the same attempt waiting for another pilot) is no regression: such a move is
    marked excused (the third item of each move)."""
    from sqlalchemy import select

    from edgeceleryapp.db import read_scope
    from edgeceleryapp.models import ArgoJob, JobEvent
    from tasks.pilots import GIVEN_BACK

    moves: dict[tuple[str, int], list[tuple[str, str, bool]]] = {}
    with read_scope() as s:
        rows = s.execute(
            select(
                JobEvent.argo_job_id,
                JobEvent.subjob_id,
                JobEvent.from_state,
                JobEvent.to_state,
                JobEvent.message,
            ).order_by(JobEvent.id)
        ).all()
        graphs = set(s.scalars(select(ArgoJob.id).where(ArgoJob.graph.is_(True))))
    for argo_id, subjob_id, frm, to, message in rows:
        if subjob_id is not None:
            key = ("subjob", subjob_id)
        else:
            key = ("graph" if argo_id in graphs else "argo", argo_id)
        moves.setdefault(key, []).append((frm, to, message.endswith(GIVEN_BACK)))
    out: dict[str, list[list[tuple[str, str, bool]]]] = {"argo": [], "graph": [], "subjob": []}
    for (kind, _), record_moves in moves.items():
        out[kind].append(record_moves)
    return out


def argo_states() -> Counter[str]:
    from sqlalchemy import select

    from edgeceleryapp.db import read_scope
    from edgeceleryapp.models import ArgoJob

    with read_scope() as s:
        return Counter(s.scalars(select(ArgoJob.state)).all())


def last_done() -> datetime | None:
    """When the last Argo job reached HISTORY (UTC, as the events record it)."""
    from sqlalchemy import func, select

    from edgeceleryapp.db import read_scope
    from edgeceleryapp.models import JobEvent

    with read_scope() as s:
        return s.scalar(
            select(func.max(JobEvent.time)).where(
                JobEvent.subjob_id.is_(None), JobEvent.to_state == "HISTORY"
            )
        )


def held_messages(url: str) -> dict[str, int]:
    """What Redis still holds at the deadline: messages waiting in the work queues, and those a
    killed worker had taken and not acknowledged (kombu's ``unacked`` hash: delivered again
    only after the visibility timeout)."""
    import redis

    client = redis.Redis.from_url(url)
    queues = ["argo", *(f"site.{site}" for site in SITES)]
    return {"queued": sum(client.llen(q) for q in queues), "unacked": client.hlen("unacked")}


def settled(by_state: Counter[str]) -> bool:
    """Every Argo job is in HISTORY, or stopped where nothing but an operator moves it."""
    from edgeceleryapp import states

    return all(states.has_stopped(states.ARGO, state) for state in by_state)


def linear(pilot: bool = False) -> list[dict]:
    """Subjobs alternating between the plain sites; the last at the pilot site if ``pilot``."""
    sites = [PLAIN[k % len(PLAIN)] for k in range(SUBJOBS)]
    if pilot:
        sites[-1] = PILOT_SITE
    return [{"name": f"s{k}", "site": site, "application": "chaos"} for k, site in enumerate(sites)]


def diamond() -> list[dict]:
    """A graph job: ``gen``, then ``left`` and ``right`` in parallel at the two sites, then
    ``join`` after both."""
    a, b = PLAIN
    return [
        {"name": "gen", "site": a, "application": "chaos", "parents": []},
        {"name": "left", "site": a, "application": "chaos", "parents": ["gen"]},
        {"name": "right", "site": b, "application": "chaos", "parents": ["gen"]},
        {"name": "join", "site": b, "application": "chaos", "parents": ["left", "right"]},
    ]


def run(args: argparse.Namespace, root: Path) -> dict:
    """Submit, inject the faults, wait for the jobs; what was counted."""
    from backends.schedulers.local import MARK
    from edgeceleryapp.models import utcnow

    real = shutil.which("setsid")
    if real is None:
        raise SystemExit("setsid: not installed (Debian: util-linux)")
    shims = root / "shims"
    shims.mkdir(parents=True)
    submissions, runs = root / "submissions.log", root / "runs.log"
    write_script(
        shims / "setsid",
        SHIM.format(mark=quote(MARK), log=quote(str(submissions)), real=quote(real)),
    )
    app = write_script(root / "app.sh", APP.format(log=quote(str(runs))))

    rng = random.Random(args.seed)
    faults = plan(args, rng, ["argo", *SITES])
    server = RedisServer(root / "redis").start()
    try:
        with DevStack.running(
            root,
            SITES,
            redis=server,
            concurrency=args.concurrency,
            env_extra={"PATH": f"{shims}:{os.environ.get('PATH', '')}"},
            poll_interval=args.poll_interval,
            status_interval=args.status_interval,
            site_settings={PILOT_SITE: {"pilots": PILOTS}},
        ) as stack:
            from edgeceleryapp import applications
            from workflows.intake import submit_argo

            for site in SITES:
                applications.add_app("chaos", site, str(app))
            for i in range(args.jobs):
                graph = args.graph_every and i % args.graph_every == args.graph_every - 1
                pilot = args.pilot_every and i % args.pilot_every == 0
                subjobs = diamond() if graph else linear(bool(pilot))
                submit_argo({"name": f"chaos{i}", "subjobs": subjobs})
            # With no faults the clocks start once the jobs are submitted.
            opened = last_fault_clock = time.monotonic()
            last_fault = utcnow()
            done_at_last_fault = 0
            exits: list[str] = []  # workers that exited on their own, started again
            for fault in faults:
                sleep_supervised(opened + fault.at - time.monotonic(), stack, exits)
                last_fault, last_fault_clock = utcnow(), time.monotonic()
                done_at_last_fault = argo_states()["HISTORY"]
                # A fault due while the one before is still under way comes right after it.
                what = f"{fault.kind} {fault.worker}".rstrip()
                late = (
                    f" (drawn {fault.at:.1f})" if last_fault_clock - opened > fault.at + 0.1 else ""
                )
                print(f"  t={last_fault_clock - opened:6.1f} s{late}  {what}", flush=True)
                inject(fault, stack, server, args.downtime)
            deadline = last_fault_clock + args.deadline
            while not settled(by_state := argo_states()) and time.monotonic() < deadline:
                sleep_supervised(1.0, stack, exits)
            events = job_events()
            finished = last_done()
            broker = held_messages(server.url)
    finally:
        server.stop()
    recovery = (finished - last_fault).total_seconds() if finished else 0.0
    return {
        "faults": [vars(f) for f in faults],
        "exits": exits,
        "end_states": dict(by_state),
        "done_at_last_fault": done_at_last_fault,
        "recovery_s": max(0.0, recovery),
        "submissions": counts(submissions),
        "runs": counts(runs),
        "broker": broker,
        "regressions": sum(regressions(records, kind) for kind, records in events.items()),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=300)
    parser.add_argument("--kills", type=int, default=40)
    parser.add_argument("--aof-restarts", type=int, default=2)
    parser.add_argument("--empty-restarts", type=int, default=1)
    parser.add_argument("--seed", type=int, default=None, help="default: drawn, and printed")
    parser.add_argument(
        "--deadline", type=float, default=180.0, help="seconds after the last fault"
    )
    parser.add_argument(
        "--window",
        type=float,
        default=None,
        help="seconds after the submissions within which the faults fall "
        "(default 0.2 s per job, at least 10)",
    )
    parser.add_argument(
        "--downtime", type=float, default=0.5, help="seconds a killed one stays down"
    )
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument(
        "--pilot-every",
        type=int,
        default=4,
        help="every Nth job runs its second subjob in pilots at site p0; 0: none",
    )
    parser.add_argument(
        "--graph-every",
        type=int,
        default=3,
        help="every Nth job is a graph job (a diamond of 4 subjobs); 0: none",
    )
    parser.add_argument(
        "--poll-interval", type=float, default=1.0, help="the site's poll_interval (shipped: 5)"
    )
    parser.add_argument(
        "--status-interval",
        type=float,
        default=30.0,
        help="the site's status_interval (shipped: 30)",
    )
    args = parse_args(
        parser,
        "60 jobs, 10 kills, 1 AOF restart, 1 empty restart (CI)",
        jobs=60,
        kills=10,
        aof_restarts=1,
        empty_restarts=1,
    )
    if args.seed is None:
        args.seed = random.SystemRandom().randrange(2**31)
    if args.window is None:
        args.window = max(10.0, 0.2 * args.jobs)
    graphs = args.jobs // args.graph_every if args.graph_every else 0
    piloted = sum(
        1
        for i in range(args.jobs)
        if args.pilot_every
        and i % args.pilot_every == 0
        and not (args.graph_every and i % args.graph_every == args.graph_every - 1)
    )
    shape = (
        f"{args.jobs} Argo jobs ({args.jobs - graphs} x {SUBJOBS} subjobs, {piloted} of them "
        f"with a subjob in pilots at {PILOT_SITE}; {graphs} diamonds of 4) at {len(SITES)} "
        f"sites; {args.kills} worker "
        f"kills, {args.aof_restarts} Redis restarts with AOF, {args.empty_restarts} empty; "
        f"seed {args.seed}"
    )
    print(
        f"Chaos: {shape}; faults within {args.window:g} s, each down {args.downtime:g} s; "
        f"poll_interval {args.poll_interval:g} s, status_interval {args.status_interval:g} s, "
        f"concurrency {args.concurrency}; other settings shipped defaults",
        flush=True,
    )
    root = Path(tempfile.mkdtemp(prefix="edgecelery-chaos-"))
    result = run(args, root)

    lost = args.jobs - result["end_states"].get("HISTORY", 0)
    twice_submitted = sum(1 for n in result["submissions"].values() if n > 1)
    twice_run = sum(1 for n in result["runs"].values() if n > 1)
    figures = [
        Figure("Argo jobs", args.jobs),
        Figure("worker process groups killed", args.kills),
        Figure("Redis restarts (AOF / empty)", args.aof_restarts + args.empty_restarts),
        Figure("Argo jobs in HISTORY at the last fault", result["done_at_last_fault"]),
        Figure("Argo jobs lost (not in HISTORY at the deadline)", lost, "", "<= 0"),
        Figure("batch jobs submitted twice (per batch name)", twice_submitted, "", "<= 0"),
        Figure("subjobs whose application ran twice", twice_run, "", "<= 0"),
        Figure("state regressions (JobEvents)", result["regressions"], "", "<= 0"),
        Figure("last fault to last job done", result["recovery_s"], "s", f"<= {TARGET_RECOVERY:g}"),
        Figure("workers that exited on their own (started again)", len(result["exits"])),
    ]
    figures[2].note = f"{args.aof_restarts} with AOF, {args.empty_restarts} empty"
    if result["exits"]:
        figures[9].note = "as systemd's Restart=on-failure would: " + ", ".join(result["exits"])
    figures[5].note = (
        f"{sum(result['submissions'].values())} submissions of "
        f"{len(result['submissions'])} batch names, counted by a setsid shim on PATH"
    )
    figures[6].note = f"{sum(result['runs'].values())} runs of {len(result['runs'])} subjobs"
    if lost:
        stuck = {s: n for s, n in result["end_states"].items() if s != "HISTORY"}
        figures[4].note = (
            "where they stopped: "
            + ", ".join(f"{s} {n}" for s, n in sorted(stuck.items()))
            + f"; Redis then held {result['broker']['queued']} queued messages and "
            f"{result['broker']['unacked']} unacknowledged"
        )
        figures[8].note = f"to the last job that ended; {args.deadline:g} s deadline"
    elif not result["faults"]:
        figures[8].note = "no faults: timed from the end of the submissions"
    elif result["recovery_s"] == 0:
        figures[8].note = "every job was done before the last fault"
    record(
        "chaos",
        f"Chaos: {shape}; poll_interval {args.poll_interval:g} s, status_interval "
        f"{args.status_interval:g} s",
        figures,
        {
            "seed": args.seed,
            "root": str(root),
            "faults": result["faults"],
            "end_states": result["end_states"],
            "broker": result["broker"],
        },
    )
    return 1 if lost or twice_submitted or twice_run or result["regressions"] else 0


if __name__ == "__main__":
    sys.exit(main())
