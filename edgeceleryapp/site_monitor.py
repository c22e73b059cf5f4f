"""Per-site coordination across worker processes, kept in one ``site_monitors`` row per site:
poll leases (single-flight ticks and status queries), the circuit breaker, the lock that
submissions hold while they check the queue limit, and what operators read of a site's health
(the workers' heartbeat, the last status query, the last step error)."""

from __future__ import annotations

import os
import socket
import time
import weakref
from datetime import datetime, timedelta

from sqlalchemy import Engine, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from backends.backfill import Window
from edgeceleryapp.db import engine, read_scope, session_scope
from edgeceleryapp.models import SiteMonitor, SubJob, utcnow
from edgeceleryapp.throttle import Breaker

# Per database engine, the sites whose row this process has seen: rows are never removed, so
# once is enough (a look-up per submission and per poll tick was a transaction each).
_known: weakref.WeakKeyDictionary[Engine, set[str]] = weakref.WeakKeyDictionary()


def ensure_monitor(site: str) -> None:
    """Create the site's row once; concurrent creators race harmlessly."""
    known = _known.setdefault(engine(), set())
    if site in known:
        return
    with read_scope() as s:
        exists = s.get(SiteMonitor, site) is not None
    if not exists:
        try:
            with session_scope() as s:
                s.add(SiteMonitor(site=site, tick_until=datetime.min, status_until=datetime.min))
        except IntegrityError:
            pass
    known.add(site)


def locked_monitor(session: Session, site: str) -> SiteMonitor:
    """The site's row, locked until the transaction ends (serialises submissions)."""
    row = session.scalars(
        select(SiteMonitor).where(SiteMonitor.site == site).with_for_update()
    ).first()
    assert row is not None, "ensure_monitor first"
    return row


def take_lease(site: str, column: str, period: float) -> bool:
    """Take the lease named ``column`` for ``period`` seconds if it has expired."""
    ensure_monitor(site)
    now = utcnow()
    col = getattr(SiteMonitor, column)
    with session_scope() as s:
        done = s.execute(
            update(SiteMonitor)
            .where(SiteMonitor.site == site, or_(col.is_(None), col <= now))
            .values({column: now + timedelta(seconds=period)})
        )
        return done.rowcount == 1


def submission_succeeded(site: str) -> None:
    """Close the breaker. Nearly every submission finds it closed with no failures counted: a
    read decides that, so those take no write lock (one write transaction fewer per subjob)."""
    with read_scope() as s:
        row = s.get(SiteMonitor, site)
        if row is None or (row.submit_failures == 0 and row.breaker_until is None):
            return
    with session_scope() as s:
        s.execute(
            update(SiteMonitor)
            .where(SiteMonitor.site == site)
            .values(submit_failures=0, breaker_until=None)
        )


def submission_failed(site: str, breaker: Breaker) -> None:
    with session_scope() as s:
        row = locked_monitor(s, site)
        row.submit_failures += 1
        reopen = breaker.after_failure(row.submit_failures, utcnow())
        if reopen is not None:
            row.breaker_until = reopen


def worker_name() -> str:
    """Who ticks: the host and process, as an operator finds it in ``ps`` or Flower."""
    return f"{socket.gethostname()}:{os.getpid()}"


# Seconds between one process's heartbeats: "last seen" is read in minutes, while a write per
# tick took the write lock ten times a second at a short poll_interval.
HEARTBEAT_EVERY = 2.0
_last_beat: weakref.WeakKeyDictionary[Engine, dict[str, float]] = weakref.WeakKeyDictionary()


def heartbeat(site: str) -> None:
    """A worker of the site is alive and consuming its queue: every worker's clock writes this
    (at most every ``HEARTBEAT_EVERY`` seconds), lease or not, so ``site show`` can tell a site
    without a worker from a quiet one without asking the broker."""
    beats, now = _last_beat.setdefault(engine(), {}), time.monotonic()
    if now - beats.get(site, -HEARTBEAT_EVERY) < HEARTBEAT_EVERY:
        return
    beats[site] = now
    ensure_monitor(site)
    with session_scope() as s:
        s.execute(
            update(SiteMonitor)
            .where(SiteMonitor.site == site)
            .values(worker_seen_at=utcnow(), worker_seen_by=worker_name())
        )


def status_queried(site: str, started: datetime, seconds: float, error: str | None) -> None:
    """The last scheduler status query: a slow or failing scheduler shows here first."""
    with session_scope() as s:
        s.execute(
            update(SiteMonitor)
            .where(SiteMonitor.site == site)
            .values(
                status_query_at=started,
                status_query_seconds=round(seconds, 3),
                status_query_error=error,
            )
        )


def step_error(subjob_id: int, message: str) -> None:
    """The last error of any step at the subjob's site (a retry's or a failure's reason)."""
    with read_scope() as s:
        site = s.scalar(select(SubJob.site).where(SubJob.id == subjob_id))
    if site is None:
        return
    ensure_monitor(site)
    with session_scope() as s:
        s.execute(
            update(SiteMonitor)
            .where(SiteMonitor.site == site)
            .values(last_error_at=utcnow(), last_error=message)
        )


def backfill_seen(site: str, windows: list[Window]) -> None:
    """Keep the idle-node windows the site's scheduler just reported, for the choice among
    candidate sites (``site_handoff``), which runs on the argo worker and asks no scheduler."""
    ensure_monitor(site)
    rows = [[w.nodes, w.seconds, w.where] for w in windows]
    with session_scope() as s:
        s.execute(
            update(SiteMonitor)
            .where(SiteMonitor.site == site)
            .values(backfill_windows=rows, backfill_at=utcnow())
        )


def recent_windows(row: SiteMonitor | None, fresh_for: float, now: datetime) -> list[Window] | None:
    """The windows the site last reported, if within ``fresh_for`` seconds; None (no
    information) otherwise: an idle node seen minutes ago is likely taken."""
    if row is None or row.backfill_at is None or row.backfill_windows is None:
        return None
    if (now - row.backfill_at).total_seconds() > fresh_for:
        return None
    return [
        Window(int(n), None if sec is None else float(sec), str(where))
        for n, sec, where in row.backfill_windows
    ]
