"""The job browser at scale: N Argo jobs (two subjobs each) in SQLite, pages served by a real
``edgecelery web`` process, timed end to end over HTTP (request sent to last byte read).

Prints, for each page, the median and worst of --repeat requests; the target is under 200 ms
for the first page and a filtered page at 100,000 jobs.

    .venv/bin/python bench/browser_scale.py [--jobs 100000] [--repeat 20]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ["EDGECELERY_BROKER_URL"] = "memory://"

SITES = ("hep_cluster", "mira", "theta")
STATES = ("HISTORY",) * 8 + ("SUBJOB_RUNNING", "SUBJOB_QUEUED", "STAGED_IN_FAILED", "KILLED")


def fill(jobs: int) -> None:
    """Bulk-insert ``jobs`` Argo jobs spread over 500 groups, with two subjobs each."""
    from sqlalchemy import insert

    from edgeceleryapp.db import session_scope
    from edgeceleryapp.models import ArgoJob, SubJob

    start = datetime(2017, 1, 1)
    batch = 10_000
    for first in range(1, jobs + 1, batch):
        ids = range(first, min(first + batch, jobs + 1))
        argo = [
            {
                "id": i,
                "name": "alpGenGeneration",
                "user_id": f"{1503418938000000 + i}",
                "group_identifier": f"alpgen.wjet.munu.13TeV.{i % 500:03d}jets.prodset",
                "email": "someone@example.org",
                "output_url": f"gsiftp://dtn.example.org/grid/atlas/hpc/argo/jobs/{i}",
                "state": STATES[i % len(STATES)],
                "current_subjob": 1,
                "num_subjobs": 2,
                "created_at": start + timedelta(minutes=i),
                "updated_at": start + timedelta(minutes=i, seconds=(i * 7919) % 86400),
            }
            for i in ids
        ]
        subjobs = [
            {
                "argo_job_id": i,
                "position": p,
                "name": f"step{p}",
                "site": "hep_cluster" if p == 0 else SITES[1 + i % 2],
                "application": "alpGen",
                "state": "JOB_FINISHED",
            }
            for i in ids
            for p in (0, 1)
        ]
        with session_scope() as s:
            s.execute(insert(ArgoJob), argo)
            s.execute(insert(SubJob), subjobs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()

    from edgeceleryapp.db import init_db
    from edgeceleryapp.devstack import write_config
    from edgeceleryapp.settings import reset_settings
    from tests.webserver import Client, running_web, web_toml

    root = Path(tempfile.mkdtemp(prefix="edgecelery-bench-"))
    config = write_config(root, "memory://", SITES, extra=web_toml().replace("page_size = 5", ""))
    os.environ["EDGECELERY_CONFIG"] = str(config)
    reset_settings()
    init_db()
    began = time.perf_counter()
    fill(args.jobs)
    print(f"{args.jobs} argo jobs, {2 * args.jobs} subjobs in {time.perf_counter() - began:.1f}s")

    pages = {
        "first page (newest first)": "/jobs",
        "filtered by group": "/jobs?group=alpgen.wjet.munu.13TeV.042jets",
        "filtered by state": "/jobs?state=STAGED_IN_FAILED",
        "filtered by site": "/jobs?site=theta",
        "group + state": "/jobs?group=alpgen.wjet.munu.13TeV.042jets&state=HISTORY",
        "sorted by modified date": "/jobs?sort=updated",
        "last page": f"/jobs?page={-(-args.jobs // 50)}",
        "JSON API, filtered by group": "/api/jobs?group=alpgen.wjet.munu.13TeV.042jets",
    }
    with running_web(config, root / "web.log") as base:
        client = Client(base)
        assert client.login("alice").status == 302
        print(f"{'page':32} {'median ms':>10} {'worst ms':>10}  rows")
        for label, path in pages.items():
            times = []
            for _ in range(args.repeat):
                t0 = time.perf_counter()
                answer = client.get(path)
                times.append((time.perf_counter() - t0) * 1000)
                assert answer.status == 200, (path, answer.status, answer.body[:300])
            rows = answer.body.count("<tr data-id=") if path.startswith("/jobs") else "json"
            print(f"{label:32} {statistics.median(times):10.1f} {max(times):10.1f}  {rows}")


if __name__ == "__main__":
    main()
