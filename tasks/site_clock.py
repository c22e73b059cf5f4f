"""The site worker's own clock: every ``poll_interval`` it runs a poll tick
(``tasks.poll.poll_site``) for each site whose queue (``site.<name>``) the worker consumes.

Why a timer in the site worker rather than celery beat at the centre sending ``site.poll``
messages: the site keeps polling and finishing its subjobs while the argo worker (and the beat
in it) is down, so nothing in flight at a site waits on the centre; and a tick is no Celery
task, so ticks neither cost broker messages nor fill Flower's task history.

It is a worker bootstep, so ``edgecelery worker --site NAME`` and plain ``celery -A
edgeceleryapp worker -Q site.NAME`` both run it; a worker without a site queue (the argo
worker) runs none. Each site ticks on a thread of its own, in the worker's main process: a tick
reads the database and runs scheduler commands, which must not block the event loop that
consumes tasks, and a slow scheduler at one site must not hold up another site's ticks. Two
workers for one site are fine: ``poll_site`` is single-flight through its lease in
``site_monitors``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from celery import bootsteps

from edgeceleryapp.settings import get_settings
from tasks.poll import poll_site

log = logging.getLogger(__name__)

SITE_QUEUE_PREFIX = "site."

# How long a warm shutdown waits for a tick in progress (normally well under a second). A tick
# cut short is safe: every move is a compare-and-set and its lease expires, so the next tick,
# here after a restart or at another worker of the site, does what it left undone.
STOP_WAIT = 10.0


def sites_served(queue_names: Iterable[str]) -> list[str]:
    """The sites whose queues are among ``queue_names``, in name order."""
    return sorted(
        name[len(SITE_QUEUE_PREFIX) :] for name in queue_names if name.startswith(SITE_QUEUE_PREFIX)
    )


def poll_tick(site: str) -> None:
    """One poll tick, logged when it moved a job: ticks have no task record to look at."""
    report = poll_site(site)
    if report.moved:
        log.info("site %s: %d jobs in flight, %d moved", site, report.in_flight, len(report.moved))


class SiteClock:
    """Calls ``tick(site)`` every ``intervals[site]`` seconds, each site on its own thread,
    the first tick at once (a restarted worker catches up without waiting), until stopped.

    A tick that raises is logged and the clock goes on: the next tick tries again. Intervals
    are kept from tick start to tick start; a tick that overruns its interval is followed by
    the next one at once, never by a burst of missed ones.
    """

    def __init__(
        self, intervals: dict[str, float], tick: Callable[[str], object] = poll_tick
    ) -> None:
        self.intervals = intervals
        self.tick = tick
        self.stopping = threading.Event()
        self.threads: list[threading.Thread] = []

    def start(self) -> None:
        self.threads = [
            # Daemons: a tick stuck past STOP_WAIT must not keep a stopped worker alive.
            threading.Thread(
                target=self._run, args=(site, every), name=f"site-clock-{site}", daemon=True
            )
            for site, every in self.intervals.items()
        ]
        for thread in self.threads:
            thread.start()
        every = ", ".join(f"{site} every {s}s" for site, s in self.intervals.items())
        log.info("site clock: polling %s", every)

    def stop(self) -> None:
        """Warm shutdown: no new ticks; wait up to STOP_WAIT for the ones in progress."""
        self.stopping.set()
        deadline = time.monotonic() + STOP_WAIT
        for thread in self.threads:
            thread.join(max(0.0, deadline - time.monotonic()))
            if thread.is_alive():
                log.warning("site clock: %s still ticking at shutdown; left to end", thread.name)

    def terminate(self) -> None:
        """Cold shutdown: no new ticks, and no waiting for the ones in progress."""
        self.stopping.set()

    def _run(self, site: str, every: float) -> None:
        due = time.monotonic()
        while not self.stopping.wait(max(0.0, due - time.monotonic())):
            try:
                self.tick(site)
            except Exception:
                log.exception("site %s: poll tick failed; the next one tries again", site)
            due = max(due + every, time.monotonic())


class SiteClockStep(bootsteps.StartStopStep):
    """Runs a ``SiteClock`` for the site queues this worker consumes (none: no clock).

    Started after the pool, so that its first children are forked before the clock's threads
    exist (a fork copies any lock a thread holds at that moment); stopped with the worker,
    before ``worker_shutdown`` writes the process's last "published" marks."""

    label = "SiteClock"
    requires = ("celery.worker.components:Pool",)

    def create(self, w: Any) -> SiteClock | None:
        sites = sites_served(w.app.amqp.queues.consume_from)
        if not sites:
            return None
        settings = get_settings()
        return SiteClock({site: settings.site(site).poll_interval for site in sites})
