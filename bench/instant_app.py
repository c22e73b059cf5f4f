"""The service's Celery app with two simulated scheduler plug-ins for the benchmarks:

- ``instant``: a batch job has finished (exit code 0) the moment it is submitted. No process
  runs; the exit-code file the batch script would write is written by ``submit`` itself.
  ``bench/throughput.py --scheduler instant`` measures the service's own cost per subjob
  without the cost of starting batch processes, which the ``local`` scheduler pays.
- ``held``: every batch job waits in the queue for ever; each status command is appended to
  the file named by ``BENCH_STATUS_LOG`` (``bench/scheduler_load.py`` counts them).

Sites name them by dotted path (``scheduler = "bench.instant_app:InstantScheduler"``); site
workers run on this module with ``celery -A bench.instant_app worker -Q site.NAME``.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from backends.batchscript import EXIT_CODE_FILE
from backends.schedulers.base import QUEUED, BatchRequest, BatchStatus, Scheduler
from edgeceleryapp.celery import app


class InstantScheduler(Scheduler):
    kind = "instant"

    def submit(self, script: Path, job: BatchRequest) -> str:
        done = job.workdir / EXIT_CODE_FILE
        done.parent.mkdir(parents=True, exist_ok=True)
        done.write_text("0\n")
        return job.name

    def find(self, name: str) -> str | None:
        return None

    def statuses(self, ids: list[str]) -> dict[str, BatchStatus]:
        return {}

    def cancel(self, batch_id: str) -> None:
        """Nothing runs, so nothing is left to cancel."""


class HeldScheduler(Scheduler):
    kind = "held"

    def submit(self, script: Path, job: BatchRequest) -> str:
        return job.name

    def find(self, name: str) -> str | None:
        return name

    def statuses(self, ids: list[str]) -> dict[str, BatchStatus]:
        with open(os.environ["BENCH_STATUS_LOG"], "a") as log:
            log.write(f"{time.time()} {len(ids)}\n")
        return {i: BatchStatus(QUEUED) for i in ids}

    def cancel(self, batch_id: str) -> None:
        """Nothing runs, so nothing is left to cancel."""


__all__ = ["app"]
