"""Database scale: 100,000 Argo jobs with 3 subjobs each (and their events) in SQLite and in
PostgreSQL; how long the operator's look-ups take.

In the process: ``job_views.list_argo(group=G)`` (what ``argo ls --group G`` runs),
``job_views.show_argo(ID)`` (``argo show ID``: the job, its subjobs, its timeline) and
``job_views.state_counts()`` (subjobs per site and state). As commands: the whole
``edgecelery argo ls --group G`` and ``edgecelery --help``, each a fresh process. Medians of
several runs. The rows are written with bulk Core inserts (not timed).

    .venv/bin/python bench/db_scale.py [--jobs 100000] [--backend sqlite|postgresql|both]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

from common import ROOT, Figure, parse_args, record

SITES = ("hep_cluster", "mira", "theta")
GROUP_SIZE = 100  # Argo jobs per group_identifier
ARGO_PATH = ("CREATED", "STAGED_IN", "SUBJOB_SUBMITTED", "SUBJOBS_COMPLETED", "HISTORY")
SUBJOB_PATH = ("CREATED", "STAGED_IN", "SUBMITTED", "RUNNING", "STAGED_OUT")


def timeline(
    last_id: int, argo_id: int, subjob_id: int | None, path: tuple[str, ...], when: datetime
) -> list[dict]:
    """JobEvent rows for a record that walked ``path``, ids after ``last_id``."""
    return [
        {
            "id": last_id + step + 1,
            "argo_job_id": argo_id,
            "subjob_id": subjob_id,
            "from_state": path[step - 1] if step else "",
            "to_state": state,
            "time": when,
            "message": "",
            "published": True,
        }
        for step, state in enumerate(path)
    ]


def populate(url: str, jobs: int, batch: int = 5000) -> float:
    """Bulk-insert ``jobs`` Argo jobs, 3 subjobs each, 5 events per job and per subjob.
    Most jobs are finished; one in ten is somewhere along the way."""
    from sqlalchemy import insert

    from edgeceleryapp.db import engine, init_db
    from edgeceleryapp.models import ArgoJob, JobEvent, SubJob

    init_db()
    rng = random.Random(7)
    start = time.perf_counter()
    t0 = datetime(2026, 1, 1)
    subjob_id = event_id = 0  # event_id: events written by earlier batches
    with engine().begin() as conn:
        for first in range(1, jobs + 1, batch):
            argo_rows, subjob_rows, event_rows = [], [], []
            for job_id in range(first, min(first + batch, jobs + 1)):
                done = rng.random() > 0.1
                when = t0 + timedelta(seconds=job_id)
                argo_rows.append(
                    {
                        "id": job_id,
                        "name": f"alpGen{job_id}",
                        "group_identifier": f"group{(job_id - 1) // GROUP_SIZE}",
                        "user_id": "bench",
                        "username": "bench",
                        "state": "HISTORY" if done else "SUBJOB_RUNNING",
                        "num_subjobs": 3,
                        "current_subjob": 3 if done else rng.randrange(3),
                        "job_status_routing_key": "bench",
                        "created_at": when,
                        "updated_at": when,
                    }
                )
                event_rows += timeline(len(event_rows) + event_id, job_id, None, ARGO_PATH, when)
                for position, site in enumerate(SITES):
                    subjob_id += 1
                    subjob_rows.append(
                        {
                            "id": subjob_id,
                            "argo_job_id": job_id,
                            "position": position,
                            "name": f"step{position}",
                            "site": site,
                            "application": "alpGen",
                            "state": "STAGED_OUT" if done else rng.choice(SUBJOB_PATH),
                            "batch_job_id": str(subjob_id),
                            "created_at": when,
                            "updated_at": when,
                        }
                    )
                    event_rows += timeline(
                        len(event_rows) + event_id, job_id, subjob_id, SUBJOB_PATH, when
                    )
            event_id += len(event_rows)
            conn.execute(insert(ArgoJob), argo_rows)
            conn.execute(insert(SubJob), subjob_rows)
            conn.execute(insert(JobEvent), event_rows)
    with engine().connect() as conn:
        if engine().dialect.name == "postgresql":
            conn.exec_driver_sql("ANALYZE")
            for table in ("argo_jobs", "subjobs", "job_events"):
                conn.exec_driver_sql(
                    f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                    f"(SELECT max(id) FROM {table}))"
                )
        else:
            conn.exec_driver_sql("ANALYZE")
        conn.commit()
    return time.perf_counter() - start


def median_ms(fn: Callable[[], object], runs: int) -> float:
    fn()  # warm: connection, statement cache
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def command_ms(argv: list[str], env: dict[str, str], runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(argv, env=env, check=True, stdout=subprocess.DEVNULL)
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def measure(backend: str, url: str, root: Path, jobs: int) -> list[Figure]:
    from edgeceleryapp import job_views
    from edgeceleryapp.db import reset_engine
    from edgeceleryapp.settings import reset_settings

    config = root / f"{backend}.toml"
    config.write_text(f'database_url = "{url}"\n')
    os.environ["EDGECELERY_CONFIG"] = str(config)
    reset_settings()
    reset_engine()
    loaded = populate(url, jobs)
    rng = random.Random(11)
    groups = jobs // GROUP_SIZE
    group = f"group{groups // 2}"
    listed = job_views.list_argo(group=group)
    assert len(listed) == min(GROUP_SIZE, jobs), len(listed)
    shown = job_views.show_argo(jobs // 2)
    assert len(shown["subjobs"]) == 3 and len(shown["events"]) == 20, shown
    ls_ms = median_ms(lambda: job_views.list_argo(group=f"group{rng.randrange(groups)}"), 30)
    show_ms = median_ms(lambda: job_views.show_argo(rng.randrange(1, jobs + 1)), 30)
    counts_ms = median_ms(job_views.state_counts, 5)
    env = {**os.environ, "EDGECELERY_CONFIG": str(config)}
    cli = [sys.executable, "-m", "edgeceleryapp.cli"]
    whole_ms = command_ms([*cli, "argo", "ls", "--group", group], env, 5)
    reset_engine()
    label = f"{backend}, {jobs:,} Argo jobs"
    return [
        Figure(f"{label}: bulk load (not a target)", loaded, "s"),
        Figure(f"{label}: list a group (in process)", ls_ms, "ms", "< 50"),
        Figure(f"{label}: show a job (in process)", show_ms, "ms", "< 50"),
        Figure(f"{label}: state counts per site", counts_ms, "ms"),
        Figure(f"{label}: `edgecelery argo ls --group G`", whole_ms, "ms", "< 1000"),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--backend", choices=("sqlite", "postgresql", "both"), default="both")
    args = parse_args(parser, "10,000 jobs", jobs=10_000)
    root = Path(tempfile.mkdtemp(prefix="edgecelery-dbscale-"))
    figures: list[Figure] = []
    if args.backend in ("sqlite", "both"):
        figures += measure("sqlite", f"sqlite:///{root / 'scale.db'}", root, args.jobs)
    if args.backend in ("postgresql", "both"):
        from tests.pg import PostgresServer

        server = PostgresServer().start()
        try:
            figures += measure("postgresql", server.url, root, args.jobs)
        finally:
            server.stop()
    env = {k: v for k, v in os.environ.items() if k != "EDGECELERY_CONFIG"}
    help_ms = command_ms([sys.executable, "-m", "edgeceleryapp.cli", "--help"], env, 7)
    figures.append(Figure("`edgecelery --help`", help_ms, "ms", "< 500"))
    record("db_scale", f"Database scale: {args.jobs:,} Argo jobs x 3 subjobs", figures)


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
