"""The site worker's clock (tasks/site_clock.py): which sites a worker polls, ticks that go on
after a tick fails, and a clean stop. Synchronised with events, never with sleeps."""

from __future__ import annotations

import logging
import threading
from collections import Counter
from types import SimpleNamespace

import pytest

from edgeceleryapp.devstack import wait_for
from tasks.site_clock import SiteClock, SiteClockStep, sites_served


def test_a_worker_polls_the_sites_whose_queues_it_consumes() -> None:
    assert sites_served(["argo", "site.beta", "celery", "site.alpha"]) == ["alpha", "beta"]
    assert sites_served(["argo", "edgecelery.intake"]) == []


def _worker(*queues: str) -> SimpleNamespace:
    """What the step reads of a Celery worker: the queues it consumes."""
    consumed = SimpleNamespace(consume_from=dict.fromkeys(queues))
    return SimpleNamespace(app=SimpleNamespace(amqp=SimpleNamespace(queues=consumed)))


def test_the_step_clocks_each_site_queue_at_its_poll_interval(env) -> None:
    worker = _worker("site.alpha")
    clock = SiteClockStep(worker).create(worker)
    assert isinstance(clock, SiteClock)
    assert clock.intervals == {"alpha": 0.2}  # tests/conftest.py's poll_interval
    argo = _worker("argo")
    assert SiteClockStep(argo).create(argo) is None, "the argo worker runs no clock"


def test_a_failing_tick_is_logged_and_the_clock_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    ticks: Counter[str] = Counter()
    enough = threading.Event()

    def tick(site: str) -> None:
        ticks[site] += 1
        if ticks["alpha"] >= 3 and ticks["beta"] >= 3:
            enough.set()
        if site == "alpha":
            raise RuntimeError("scheduler away")

    clock = SiteClock({"alpha": 0.01, "beta": 0.01}, tick)
    with caplog.at_level(logging.ERROR, logger="tasks.site_clock"):
        clock.start()
        try:
            assert enough.wait(10), f"ticks went on: {ticks}"
        finally:
            clock.stop()
    assert not any(thread.is_alive() for thread in clock.threads)
    assert "site alpha: poll tick failed" in caplog.text
    assert "scheduler away" in caplog.text
    assert "site beta" not in caplog.text


def _blocking_clock() -> tuple[SiteClock, list[str], threading.Event, threading.Event]:
    """A clock whose tick blocks until released; an interval so short that, were the clock
    not stopped, the next tick would start at once."""
    calls: list[str] = []
    entered, release = threading.Event(), threading.Event()

    def tick(site: str) -> None:
        calls.append(site)
        entered.set()
        release.wait(10)

    return SiteClock({"alpha": 0.0001}, tick), calls, entered, release


def test_stop_waits_for_the_tick_in_progress_and_starts_no_other() -> None:
    clock, calls, entered, release = _blocking_clock()
    clock.start()
    assert entered.wait(10)
    stopper = threading.Thread(target=clock.stop)
    stopper.start()
    wait_for(clock.stopping.is_set, 10, "the stop to begin")
    assert stopper.is_alive(), "stop waits while the tick runs"
    release.set()
    stopper.join(10)
    assert not stopper.is_alive()
    assert not any(thread.is_alive() for thread in clock.threads)
    assert calls == ["alpha"]


def test_terminate_does_not_wait_for_the_tick_in_progress() -> None:
    clock, calls, entered, release = _blocking_clock()
    clock.start()
    assert entered.wait(10)
    clock.terminate()
    assert all(thread.is_alive() for thread in clock.threads), "the tick still runs"
    release.set()
    wait_for(lambda: not any(t.is_alive() for t in clock.threads), 10, "the clock to end")
    assert calls == ["alpha"]
