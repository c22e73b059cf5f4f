"""Poll cost at scale: N subjobs in flight at one site on a simulated scheduler.

Prints, per poll interval: broker messages (one resume chain per job that ended; the tick
itself, on the site worker's clock, sends none), scheduler status commands, the tick's wall
time, and the process's peak memory. The point (DESIGN.md): the cost must not grow with the
jobs in flight.

    .venv/bin/python bench/poll_scale.py [--jobs 10000] [--ticks 5] [--finish-per-tick 100]
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ["EDGECELERY_BROKER_URL"] = "memory://"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--ticks", type=int, default=5)
    parser.add_argument("--finish-per-tick", type=int, default=100)
    args = parser.parse_args()

    from edgeceleryapp.devstack import write_config

    root = Path(tempfile.mkdtemp(prefix="edgecelery-bench-"))
    config = write_config(
        root,
        "memory://",
        ("bench",),
        poll_interval=1,
        status_interval=1,
        site_settings={"bench": {"scheduler": "local"}},
    )
    os.environ["EDGECELERY_CONFIG"] = str(config)

    from celery.canvas import Signature
    from sqlalchemy import insert, update

    from backends.runners import runner_for
    from backends.schedulers.base import RUNNING, BatchStatus, Scheduler
    from edgeceleryapp.db import init_db, session_scope
    from edgeceleryapp.models import SiteMonitor, SubJob, utcnow
    from tasks import poll

    class SimScheduler(Scheduler):
        """Answers for any number of ids in one call, as squeue -j a,b,c does."""

        calls = 0

        def submit(self, script, job):  # pragma: no cover - not used here
            raise NotImplementedError

        def find(self, name):  # pragma: no cover
            return None

        def statuses(self, ids):
            SimScheduler.calls += 1
            return {i: BatchStatus(RUNNING) for i in ids}

        def cancel(self, batch_id):  # pragma: no cover
            pass

    poll.scheduler_for = lambda site: SimScheduler(site, runner_for(site))  # type: ignore[assignment]
    sent: list[str] = []
    Signature.apply_async = lambda self, *a, **k: sent.append(self.name or "chain")  # type: ignore[method-assign]

    init_db()
    t0 = time.perf_counter()
    now = utcnow()
    with session_scope() as s:
        s.execute(
            insert(SubJob),
            [
                {
                    "site": "bench",
                    "application": "sim",
                    "name": f"j{i}",
                    "state": "RUNNING",
                    "batch_job_id": str(100_000 + i),
                    "submitted_at": now,
                    "updated_at": now,
                    "created_at": now,
                    "num_nodes": 1,
                    "processes_per_node": 1,
                    "attempt": 1,
                    "position": 0,
                    "description": "",
                    "state_message": "",
                }
                for i in range(args.jobs)
            ],
        )
    with session_scope() as s:
        ids = [
            row[0]
            for row in s.execute(
                SubJob.__table__.select().with_only_columns(SubJob.id).order_by(SubJob.id)
            )
        ]
    print(f"set-up: {args.jobs} subjobs RUNNING at site 'bench' ({time.perf_counter() - t0:.1f}s)")

    print(
        f"{'tick':>4} {'in flight':>9} {'broker msgs':>11} {'status cmds':>11} "
        f"{'ended':>6} {'tick s':>7} {'peak RSS MiB':>12}"
    )
    finished = 0
    for tick in range(1, args.ticks + 1):
        for job_id in ids[finished : finished + args.finish_per_tick]:
            control = root / "sites" / "bench" / "jobs" / str(job_id) / ".edgecelery"
            control.mkdir(parents=True, exist_ok=True)
            (control / "exitcode").write_text("0\n")
        finished += args.finish_per_tick
        with session_scope() as s:  # a new interval: the leases have expired
            s.execute(update(SiteMonitor).values(tick_until=now.min, status_until=now.min))
        sent.clear()
        calls_before = SimScheduler.calls
        start = time.perf_counter()
        report = poll.poll_site("bench")
        elapsed = time.perf_counter() - start
        messages = len(sent)  # the resume chains
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(
            f"{tick:>4} {report.in_flight:>9} {messages:>11} "
            f"{SimScheduler.calls - calls_before:>11} {len(report.moved):>6} "
            f"{elapsed:>7.2f} {rss:>12.0f}"
        )


if __name__ == "__main__":
    main()
