"""The service's Celery app with one more scheduler plug-in, ``instant``: a batch job that
has finished (exit code 0) the moment it is submitted. No process runs; the exit-code file the
batch script would write is written by ``submit`` itself.

``bench/throughput.py --scheduler instant`` starts site workers on this app
(``celery -A bench.instant_app worker``) to measure the service's own cost per subjob without
the cost of starting batch processes, which the ``local`` scheduler pays.
"""

from __future__ import annotations

from pathlib import Path

from backends.batchscript import EXIT_CODE_FILE
from backends.schedulers import SCHEDULERS
from backends.schedulers.base import BatchRequest, BatchStatus, Scheduler
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


SCHEDULERS["instant"] = InstantScheduler
__all__ = ["app"]
