"""Scheduler load: status commands per site per minute while 1,000 subjobs wait in the queue.

The real service (Redis, the Argo worker with beat sending one poll per ``poll_interval``, one
site worker of concurrency 2) follows 1,000 subjobs whose batch jobs stay queued (the ``held``
scheduler of ``bench/instant_app.py`` logs each status command). ``poll_interval`` 1 s,
``status_interval`` 30 s, as in production. Also prints the site worker's CPU share: the cost
of following 1,000 jobs.

    .venv/bin/python bench/scheduler_load.py [--subjobs 1000] [--minutes 2]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from common import Figure, record
from throughput import cpu_seconds, start_celery_worker, stop


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subjobs", type=int, default=1000)
    parser.add_argument("--minutes", type=float, default=2.0)
    parser.add_argument("--quick", action="store_true", help="65 seconds")
    args = parser.parse_args()
    if args.quick:
        args.minutes = min(args.minutes, 65 / 60)

    from edgeceleryapp.cli.demo import write_config
    from edgeceleryapp.localservice import RedisServer, Worker, wait_for_workers

    root = Path(tempfile.mkdtemp(prefix="edgecelery-schedload-"))
    (root / "logs").mkdir()
    status_log = root / "status-commands.log"
    status_log.touch()
    redis_server = RedisServer(root / "redis").start()
    config = write_config(
        root,
        redis_server.url,
        ("mira",),
        poll_interval=1.0,
        status_interval=30.0,
        site_settings={"mira": {"scheduler": "held"}},
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGECELERY_")}
    env.update(EDGECELERY_CONFIG=str(config), BENCH_STATUS_LOG=str(status_log))
    os.environ.update(env)

    from sqlalchemy import insert

    from edgeceleryapp.db import init_db, session_scope
    from edgeceleryapp.models import SubJob, utcnow

    init_db()
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
                for i in range(args.subjobs)
            ],
        )
    argo = Worker("argo", env, root / "logs" / "argo.log").start()
    site = start_celery_worker(
        "bench.instant_app", "site.mira", "mira", env, root / "logs" / "mira.log", 2
    )
    try:
        wait_for_workers(redis_server.url, ["argo", "mira"])
        cpu0, start = cpu_seconds([site.pid]), time.monotonic()
        first = len(status_log.read_text().splitlines())
        time.sleep(args.minutes * 60)  # the measurement window: the service runs on its own
        elapsed = time.monotonic() - start
        commands = status_log.read_text().splitlines()[first:]
        cpu = cpu_seconds([site.pid]) - cpu0
    finally:
        stop(site)
        argo.stop()
        redis_server.stop()
    asked = max((int(line.split()[1]) for line in commands), default=0)
    figures = [
        Figure("status commands per site per minute", len(commands) / elapsed * 60, "", "<= 2"),
        Figure("jobs asked about per command (max)", asked, ""),
        Figure("site worker CPU while following them", 100 * cpu / elapsed, "%"),
    ]
    record(
        "scheduler_load",
        f"Scheduler load: {args.subjobs:,} subjobs queued at one site for "
        f"{elapsed:.0f} s (poll_interval 1 s, status_interval 30 s)",
        figures,
        {"commands": commands},
    )


if __name__ == "__main__":
    sys.exit(main())
