"""Scheduler load: status commands per site per minute while 1,000 subjobs wait in the queue;
and the site worker's memory (run with ``--subjobs 10000`` for the memory target).

The real service (Redis, the Argo worker, one site worker of concurrency 2 that ticks once per
``poll_interval`` on its own clock) follows 1,000 subjobs whose batch jobs stay queued (the ``held``
scheduler of ``bench/instant_app.py`` logs each status command). ``poll_interval`` 1 s,
``status_interval`` 30 s, as in production. Also prints the site worker's CPU share: the cost
of following 1,000 jobs, and the peak resident memory (VmHWM) of the site worker's processes
(the Celery parent and its pool children), summed.

    .venv/bin/python bench/scheduler_load.py [--subjobs 1000] [--minutes 2]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from common import ROOT, Figure, parse_args, record, status_command_figures
from throughput import cpu_seconds


def peak_rss_mib(leader: int) -> float:
    """The summed peak resident memory of every process in the session led by ``leader``
    (shared pages are counted once per process, so this over-states the worker's use)."""
    total = 0
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            if os.getsid(int(status.parent.name)) != leader:
                continue
            fields = dict(line.split(":", 1) for line in status.read_text().splitlines())
        except (OSError, ValueError):
            continue
        total += int(fields["VmHWM"].split()[0])
    return total / 1024


def queue_subjobs(count: int) -> None:
    """``count`` subjobs whose batch jobs wait in the queue, written straight to the database."""
    from sqlalchemy import insert

    from edgeceleryapp.db import session_scope
    from edgeceleryapp.models import SubJob, utcnow

    now = utcnow()
    with session_scope() as s:
        s.execute(
            insert(SubJob),
            [
                {
                    "site": "mira",
                    "application": "app",
                    "name": f"w{i}",
                    "state": "QUEUED",
                    "batch_job_id": f"ecbench_{i}a1",
                    "submitted_at": now,
                    "updated_at": now,
                    "created_at": now,
                }
                for i in range(count)
            ],
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subjobs", type=int, default=1000)
    parser.add_argument("--minutes", type=float, default=2.0)
    args = parse_args(parser, "65 seconds", minutes=65 / 60)

    from edgeceleryapp.devstack import DevStack

    root = Path(tempfile.mkdtemp(prefix="edgecelery-schedload-"))
    status_log = root / "status-commands.log"
    status_log.touch()
    with DevStack.running(
        root,
        ("mira",),
        workers=(),
        env_extra={"BENCH_STATUS_LOG": str(status_log), "PYTHONPATH": str(ROOT)},
        poll_interval=1.0,
        status_interval=30.0,
        site_settings={"mira": {"scheduler": "bench.instant_app:HeldScheduler"}},
    ) as stack:
        queue_subjobs(args.subjobs)
        stack.start_worker("argo", wait=False)
        # The held scheduler lives in bench/instant_app.py: the site worker runs that app.
        site = stack.start_worker("mira", app="bench.instant_app", concurrency=2, wait=False)
        stack.wait_for_workers(["argo", "mira"])
        cpu0, start = cpu_seconds([site.pid]), time.monotonic()
        first = len(status_log.read_text().splitlines())
        time.sleep(args.minutes * 60)  # the measurement window: the service runs on its own
        elapsed = time.monotonic() - start
        commands = status_log.read_text().splitlines()[first:]
        cpu = cpu_seconds([site.pid]) - cpu0
        rss = peak_rss_mib(site.pid)
    asked = max((int(line.split()[1]) for line in commands), default=0)
    figures = [
        *status_command_figures([float(c.split()[0]) for c in commands], elapsed, 30.0),
        Figure("jobs asked about per command (max)", asked, ""),
        Figure("site worker CPU while following them", 100 * cpu / elapsed, "%"),
        Figure(
            f"site worker peak RSS with {args.subjobs:,} in flight (parent + pool)",
            rss,
            "MiB",
            "< 300" if args.subjobs >= 10_000 else "",
        ),
    ]
    record(
        f"scheduler_load-{args.subjobs}",
        f"Scheduler load: {args.subjobs:,} subjobs queued at one site for "
        f"{elapsed:.0f} s (poll_interval 1 s, status_interval 30 s)",
        figures,
        {"commands": commands},
    )


if __name__ == "__main__":
    sys.exit(main())
