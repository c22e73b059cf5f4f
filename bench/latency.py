"""Latency: one subjob end to end with an instant application, one Argo job at a time, through
the real service (Redis, the Argo worker with beat, one site worker; the ``local`` scheduler
runs ``/bin/true``). Site settings as in production: ``poll_interval`` 1 s, ``status_interval``
30 s.

Prints the median time of every hop, from the JobEvents (each state change's recorded time),
and the time from the batch job's exit (the moment its exit-code file was written, from the
file's modification time) to the service noticing it (the EXECUTION_FINISHED event).

    .venv/bin/python bench/latency.py [--jobs 20]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path

from common import Figure, parse_args, record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=20)
    args = parse_args(parser, "8 jobs", jobs=8)

    from edgeceleryapp.devstack import DevStack, wait_for

    hops: dict[str, list[float]] = defaultdict(list)
    noticed: list[float] = []
    totals: list[float] = []
    root = Path(tempfile.mkdtemp(prefix="edgecelery-latency-"))
    with DevStack.running(root, ("mira",), poll_interval=1.0, status_interval=30.0):
        # Imported once the settings file is in place: the Celery app reads it on import.
        from backends.batchscript import EXIT_CODE_FILE
        from edgeceleryapp import applications, job_views
        from workflows.intake import submit_argo

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

    figures = [
        Figure(f"hop: {name}", 1000 * statistics.median(values), "ms")
        for name, values in hops.items()
    ]
    figures += [
        Figure("end to end (first event to HISTORY), median", statistics.median(totals), "s"),
        Figure("batch exit to noticed, median", statistics.median(noticed), "s", "<= 2"),
        Figure("batch exit to noticed, max", max(noticed), "s"),
    ]
    record(
        "latency",
        f"Latency: {args.jobs} Argo jobs of one subjob, one at a time (local scheduler, "
        "/bin/true, poll_interval 1 s, status_interval 30 s)",
        figures,
        {"noticed_s": noticed, "totals_s": totals},
    )


if __name__ == "__main__":
    sys.exit(main())
