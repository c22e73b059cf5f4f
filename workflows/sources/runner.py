"""The argo worker runs the configured job sources (``[[sources]]``), each on a thread of its
own that looks for new work every ``poll_interval`` seconds, and at once again after a full
batch.

Why threads in a worker bootstep rather than the intake consumer's event loop, or celery beat:
a look reads another database or a folder and stores jobs, all blocking calls that must not
stall the loop consuming the intake queue and the Argo steps; a slow experiment database must
not delay a folder's files; and a beat-sent task would add a broker round trip and a task
record to every look (at 0.2 s, most of Flower's history) plus beat's one-second resolution
to every job's start. Polling, rather than waiting on change notifications, works the same on
SQLite, PostgreSQL, any other database and network file systems; at the default 0.2 s it adds
0.1 s on average.

It runs in the worker that consumes the intake queue (``--intake``, which ``edgecelery worker
--argo`` passes): sources are intake. Two such workers are safe: a row or file read by both
makes one job (``workflows.sources.base``).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from celery import bootsteps

from edgeceleryapp.settings import get_settings
from workflows.sources.base import JobSource
from workflows.sources.registry import source_class

log = logging.getLogger(__name__)

# How long a warm shutdown waits for a look in progress; one cut short is read again later.
STOP_WAIT = 10.0
# After looks that failed in a row (the source's database away), the wait doubles, up to this
# many seconds: an absent database is not asked five times a second.
RETRY_MAX = 30.0


class SourceRunner:
    """Polls each source on its own thread until stopped. A look that raises is logged and
    tried again later; the worker goes on."""

    def __init__(self, sources: list[JobSource], wait: Callable[[JobSource, int, int], float]):
        self.sources = sources
        self.wait = wait
        self.stopping = threading.Event()
        self.threads: list[threading.Thread] = []

    def start(self) -> None:
        self.threads = [
            threading.Thread(target=self._run, args=(source,), name=f"source-{source.name}",
                             daemon=True)
            for source in self.sources
        ]  # fmt: skip
        for thread in self.threads:
            thread.start()
        log.info("job sources: %s", ", ".join(s.name for s in self.sources))

    def stop(self) -> None:
        self.stopping.set()
        for thread in self.threads:
            thread.join(STOP_WAIT)

    def terminate(self) -> None:
        self.stopping.set()

    def _run(self, source: JobSource) -> None:
        started = False
        failures = 0
        while not self.stopping.is_set():
            found = 0
            try:
                if not started:
                    source.start()
                    started = True
                found = source.poll()
                failures = 0
            except Exception:
                failures += 1
                log.exception("job source %s: a look failed; trying again", source.name)
            if self.stopping.wait(self.wait(source, found, failures)):
                break
        if started:
            source.close()


def pause(source: JobSource, found: int, failures: int) -> float:
    """Seconds until the next look: none after a full batch (more are waiting), the source's
    interval after an ordinary look, doubling with each failed look in a row."""
    every = source.settings.poll_interval
    if failures:
        return min(RETRY_MAX, every * 2**failures)
    return 0.0 if found >= source.settings.batch else every


def make_sources() -> list[JobSource]:
    return [source_class(s.kind)(s) for s in get_settings().sources]


class SourceRunnerStep(bootsteps.StartStopStep):
    """Runs the job sources in the worker that consumes the intake queue. Started after the
    pool, so its first children are forked before the threads exist (as the site clock)."""

    label = "JobSources"
    requires = ("celery.worker.components:Pool",)

    def __init__(self, parent: Any, intake: bool = False, **kwargs: Any) -> None:
        self.intake = intake
        super().__init__(parent, **kwargs)

    def create(self, w: Any) -> SourceRunner | None:
        if not self.intake or not get_settings().sources:
            return None
        return SourceRunner(make_sources(), pause)
