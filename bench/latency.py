"""Latency: one subjob end to end with an instant application, one Argo job at a time, through
the real service (Redis, the Argo worker with beat, one site worker; the ``local`` scheduler
runs ``/bin/true``). Site settings as in production: ``poll_interval`` 1 s, ``status_interval``
30 s.

Prints the median time of every hop, from the JobEvents (each state change's recorded time),
and the time from the batch job's exit (the moment its exit-code file was written, from the
file's modification time) to the service noticing it (the EXECUTION_FINISHED event).

Then the between-shot path of the HUST'17 paper's DIII-D case: a row inserted in an
experiment's database (a SQLite file, read by an ``sql`` job source at its default
``poll_interval``) until the batch job is submitted (the subjob's SUBMITTED event), and a
message published on the intake queue until the batch job is submitted; each one job at a
time.

    .venv/bin/python bench/latency.py [--jobs 20]
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import statistics
import sys
import tempfile
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path

from common import Figure, parse_args, record
from sqlalchemy import select

TEMPLATE = (
    '{"name": "shot-{shot}", "subjobs": [{"name": "one", "site": "mira", "application": "true"}]}'
)


def _now() -> datetime:
    """Now as the service records event times (UTC, naive)."""
    return datetime.now(UTC).replace(tzinfo=None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=20)
    args = parse_args(parser, "8 jobs", jobs=8)

    from edgeceleryapp.devstack import DevStack, wait_for

    hops: dict[str, list[float]] = defaultdict(list)
    noticed: list[float] = []
    totals: list[float] = []
    from edgeceleryapp.devstack import sources_toml

    row_to_submitted: list[float] = []
    message_to_submitted: list[float] = []
    root = Path(tempfile.mkdtemp(prefix="edgecelery-latency-"))
    shots = root / "shots.db"
    with sqlite3.connect(shots) as conn:
        conn.execute("CREATE TABLE shots (shot INTEGER PRIMARY KEY)")
    source = {
        "name": "shots",
        "kind": "sql",
        "url": f"sqlite:///{shots}",
        "query": "SELECT shot FROM shots WHERE shot > :after ORDER BY shot LIMIT :limit",
        "key": "shot",
        "template": TEMPLATE,
    }
    with DevStack.running(
        root, ("mira",), poll_interval=1.0, status_interval=30.0, extra=sources_toml([source])
    ) as stack:
        # Imported once the settings file is in place: the Celery app reads it on import.
        from backends.batchscript import EXIT_CODE_FILE
        from edgeceleryapp import applications, job_views
        from edgeceleryapp.broker_connection import connect, for_url
        from edgeceleryapp.db import read_scope
        from edgeceleryapp.models import ArgoJob
        from workflows.intake import submit_argo
        from workflows.intake_consumer import intake_queue

        def job_by_key(key: str) -> int | None:
            with read_scope() as s:
                return s.scalar(select(ArgoJob.id).where(ArgoJob.intake_key == key))

        def ended(argo_id: int) -> bool:
            state = job_views.show_argo(argo_id)["state"]
            return state == "HISTORY" or state.endswith("_FAILED")

        applications.add_app("true", "mira", "/bin/true")
        for i in range(args.jobs):
            argo_id = submit_argo(
                {
                    "name": f"lat{i}",
                    "subjobs": [{"name": "one", "site": "mira", "application": "true"}],
                }
            )
            wait_for(
                lambda a=argo_id: (
                    job_views.show_argo(a)["state"] in ("HISTORY",)
                    or job_views.show_argo(a)["state"].endswith("_FAILED")
                ),
                60,
                f"argo job {argo_id}",
                interval=0.05,
            )
            data = job_views.show_argo(argo_id)
            if data["state"] != "HISTORY":
                raise SystemExit(f"argo job {argo_id} ended {data['state']}: {data}")
            events = data["events"]
            times = [datetime.fromisoformat(e["time"].rstrip("Z")) for e in events]
            for k in range(1, len(events)):
                e = events[k]
                who = "subjob" if e["subjob_id"] else "argo"
                hops[f"{who} {e['from_state'] or '-'} -> {e['to_state']}"].append(
                    (times[k] - times[k - 1]).total_seconds()
                )
            totals.append((times[-1] - times[0]).total_seconds())
            subjob = data["subjobs"][0]
            workdir = root / "sites" / "mira" / "jobs" / str(subjob["id"])
            exit_file = workdir / EXIT_CODE_FILE
            exited = datetime.fromtimestamp(exit_file.stat().st_mtime, UTC).replace(tzinfo=None)
            finished = next(
                t
                for e, t in zip(events, times, strict=True)
                if e["subjob_id"] and e["to_state"] == "EXECUTION_FINISHED"
            )
            noticed.append((finished - exited).total_seconds())

        def submitted_after(key: str, since: datetime) -> float:
            """Seconds from ``since`` to the SUBMITTED event of the job stored under ``key``,
            once that job has ended."""
            argo_id = wait_for(lambda: job_by_key(key), 30, f"the job of {key}", interval=0.02)
            wait_for(lambda: ended(argo_id), 60, f"argo job {argo_id}", interval=0.05)
            events = job_views.show_argo(argo_id)["events"]
            submitted = next(
                e["time"] for e in events if e["subjob_id"] and e["to_state"] == "SUBMITTED"
            )
            return (datetime.fromisoformat(submitted.rstrip("Z")) - since).total_seconds()

        for shot in range(1, args.jobs + 1):
            since = _now()
            with sqlite3.connect(shots) as conn:
                conn.execute("INSERT INTO shots VALUES (?)", (shot,))
            row_to_submitted.append(submitted_after(f"source:shots:{shot}", since))

        queue = intake_queue()
        with connect(for_url(stack.broker_url)) as conn, conn.Producer() as producer:
            for i in range(args.jobs):
                body = json.loads(TEMPLATE.replace("{shot}", f"m{i}"))
                since = _now()
                producer.publish(
                    json.dumps(body),
                    exchange=queue.exchange,
                    routing_key=queue.routing_key,
                    declare=[queue],
                    content_type="application/json",
                    content_encoding="utf-8",
                    message_id=f"latency-{root.name}-{i}",
                )
                message_to_submitted.append(submitted_after(f"latency-{root.name}-{i}", since))

    figures = [
        Figure(f"hop: {name}", 1000 * statistics.median(values), "ms")
        for name, values in hops.items()
    ]
    figures += [
        Figure("end to end (first event to HISTORY), median", statistics.median(totals), "s"),
        Figure("batch exit to noticed, median", statistics.median(noticed), "s", "<= 2"),
        Figure("batch exit to noticed, max", max(noticed), "s"),
        Figure(
            "row inserted to batch job submitted, median",
            statistics.median(row_to_submitted),
            "s",
            "< 2",
            "sql source, SQLite, poll_interval 0.2 s",
        ),
        Figure("row inserted to batch job submitted, max", max(row_to_submitted), "s"),
        Figure(
            "intake message to batch job submitted, median",
            statistics.median(message_to_submitted),
            "s",
            "< 2",
        ),
        Figure("intake message to batch job submitted, max", max(message_to_submitted), "s"),
    ]
    record(
        "latency",
        f"Latency: {args.jobs} Argo jobs of one subjob, one at a time (local scheduler, "
        "/bin/true, poll_interval 1 s, status_interval 30 s)",
        figures,
        {
            "noticed_s": noticed,
            "totals_s": totals,
            "row_to_submitted_s": row_to_submitted,
            "message_to_submitted_s": message_to_submitted,
        },
    )


if __name__ == "__main__":
    sys.exit(main())
