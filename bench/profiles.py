"""Where the time goes: py-spy samples of every worker process during a throughput run, and a
cProfile of intake in one process. The tables behind the analysis in docs/performance.md.

1. Workers: ``bench/throughput.py --scheduler instant`` runs in the background; once its
   service workers are up, py-spy (a dev dependency) samples each worker process for a few
   seconds. Each sample is put in one bucket by what its stack is doing.
2. Intake: ``workflows.intake_consumer.receive_batch`` for N messages in batches of
   ``BATCH`` (as the intake consumer takes them) against a private Redis, under cProfile;
   the cumulative share of the functions that matter.

    .venv/bin/python bench/profiles.py [--seconds 8] [--messages 1000]
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from common import ROOT, Figure, parse_args, record

OURS = (
    "(tasks/",
    "(workflows/",
    "(backends/",
    "(edgeceleryapp/state_store",
    "(edgeceleryapp/status",
    "(edgeceleryapp/db",
    "(edgeceleryapp/site_monitor",
)
BATCH = 100  # intake messages per batch, the default intake_batch
BUCKETS = (
    "status messages (kombu publish, mark published)",
    "our database work (SQLAlchemy, sqlite3)",
    "chains our code sends (advance, poller)",
    "our other step work (files, transfers)",
    "celery beat",
    "Celery/kombu per-task machinery (receive, ack, events, chain continuation, idle loop)",
)


def bucket(stack: str) -> str:
    ours = any(marker in stack for marker in OURS)
    if "(edgeceleryapp/status" in stack:
        return BUCKETS[0]
    if ours and "apply_async" in stack:
        return BUCKETS[2]
    if ours and "(sqlalchemy/" in stack:
        return BUCKETS[1]
    if ours and "(celery/app/trace" in stack:
        return BUCKETS[3]
    if "(celery/beat" in stack:
        return BUCKETS[4]
    return BUCKETS[5]


def worker_profile(seconds: float, out: Path) -> Counter:
    bench = subprocess.Popen(
        [sys.executable, str(ROOT / "bench" / "throughput.py"), "--scheduler", "instant",
         "--jobs", "300"],
        stdout=subprocess.DEVNULL,
        env={k: v for k, v in os.environ.items() if k != "BENCH_RESULTS"},
    )  # fmt: skip
    pattern = "edgeceleryapp.cli worker|instant_app worker"
    deadline = time.monotonic() + 300
    pids: list[str] = []
    while time.monotonic() < deadline and len(pids) < 9:  # 3 workers x (parent + 2 children)
        found = subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True)
        pids = found.stdout.split()
        time.sleep(0.2)
    time.sleep(3)  # into the steady state, past the first submissions
    spy = str(Path(sys.executable).parent / "py-spy")
    recorders = [
        subprocess.Popen(
            [
                spy,
                "record",
                "-p",
                pid,
                "-d",
                str(seconds),
                "-r",
                "100",
                "-f",
                "raw",
                "-o",
                str(out / f"{pid}.txt"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for pid in pids
    ]
    for r in recorders:
        r.wait()
    bench.wait()
    samples: Counter = Counter()
    for raw in out.glob("*.txt"):
        for line in raw.read_text().splitlines():
            stack, _, n = line.rpartition(" ")
            samples[bucket(stack)] += int(n)
    return samples


def intake_profile(messages: int) -> list[tuple[str, float]]:
    from edgeceleryapp.devstack import DevStack

    def message(i: int) -> dict:
        return {
            "name": f"a{i}",
            "job_status_routing_key": "bench",
            "subjobs": [
                {"name": "gen", "site": "hep_cluster", "application": "alpGen"},
                {"name": "sim", "site": "mira", "application": "wjets"},
            ],
        }

    root = Path(tempfile.mkdtemp(prefix="edgecelery-profile-"))
    profiler = cProfile.Profile()
    with DevStack.running(root, ("hep_cluster", "mira"), workers=()):
        # Imported once the settings file is in place: the Celery app reads it on import.
        from workflows.inbound import Received, screen
        from workflows.intake_consumer import receive_batch

        def screened(i: int, key: str) -> Any:
            """As the consumer hands a message on: screened, outside the profile."""
            return screen(Received(json.dumps(message(i)).encode(), "application/json", key))

        receive_batch([screened(-1, "warm")])
        for first in range(0, messages, BATCH):
            batch = [screened(i, f"m{i}") for i in range(first, min(first + BATCH, messages))]
            profiler.enable()
            receive_batch(batch)
            profiler.disable()
    stats = pstats.Stats(profiler).stats  # type: ignore[attr-defined]
    total = max(
        ct for (_f, _l, name), (_cc, _nc, _tt, ct, _c) in stats.items() if name == "receive_batch"
    )
    wanted = {
        ("intake.py", "store_argos"): "store jobs, subjobs, events (with their status messages)",
        ("status_outbox.py", "send"): "  of which status messages (3 per job, one batch)",
        ("intake.py", "start_argos"): "first chains: Celery task + task-sent event, one batch",
        ("intake.py", "existing_argos"): "redelivery look-up (intake keys, one query)",
        ("intake.py", "checked_argo"): "validation (pydantic)",
    }
    rows = []
    for (file, _line, name), (_cc, _nc, _tt, ct, _c) in stats.items():
        label = wanted.get((Path(file).name, name))
        if label:
            rows.append((label, 100 * ct / total))
    return sorted(rows, key=lambda r: -r[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=8)
    parser.add_argument("--messages", type=int, default=1000)
    args = parse_args(parser, "the same (it is short)")
    samples = worker_profile(args.seconds, Path(tempfile.mkdtemp(prefix="edgecelery-spy-")))
    total = sum(samples.values()) or 1
    workers = [Figure(name, 100 * samples[name] / total, "%") for name in BUCKETS]
    record(
        "profile-workers",
        "Profile: worker processes during bench/throughput.py --scheduler instant "
        f"(py-spy, {total:,} samples, share of samples)",
        workers,
    )
    intake = [Figure(name, share, "%") for name, share in intake_profile(args.messages)]
    record(
        "profile-intake",
        f"Profile: intake of {args.messages:,} messages in batches of {BATCH} in one process "
        "(cProfile, cumulative share of receive_batch())",
        intake,
    )


if __name__ == "__main__":
    sys.exit(main())
