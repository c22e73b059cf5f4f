"""What an operator asks of a site (``edgecelery site ls``/``site show``, the web's sites page):
is a worker consuming its queue, how deep is the queue, what do its jobs wait for.

Read from the database first: the workers' clocks write a heartbeat into ``site_monitors``
every tick, so "no worker" is known with the broker away. Only the queue's depth asks the
broker, and says "unknown" when it cannot.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from edgeceleryapp import pilot_views, states
from edgeceleryapp.db import read_scope
from edgeceleryapp.errors import NotFound
from edgeceleryapp.models import SiteMonitor, SubJob, utcnow
from edgeceleryapp.settings import SiteSettings, get_settings
from edgeceleryapp.throttle import QueuePolicy

QUEUE_PREFIX = "site."
# A worker's clock ticks every poll_interval; a heartbeat older than two ticks and this slack
# (a slow tick, a busy database) means no worker of the site is alive.
HEARTBEAT_SLACK = 10.0


def stamp(moment: datetime | None) -> str | None:
    return moment.isoformat(timespec="seconds") + "Z" if moment is not None else None


def how_long(seconds: float) -> str:
    """A wait as people say it, coarse enough that ``--follow`` prints it once a minute."""
    minutes = int(seconds // 60)
    if minutes < 1:
        return "less than a minute"
    if minutes < 120:
        return f"{minutes} min"
    return f"{minutes // 60} h"


def worker_alive(row: SiteMonitor | None, site: SiteSettings, now: datetime) -> bool:
    """Whether a worker of the site ticked recently (``site_monitor.heartbeat``)."""
    if row is None or row.worker_seen_at is None:
        return False
    fresh = timedelta(seconds=2 * site.poll_interval + HEARTBEAT_SLACK)
    return now - row.worker_seen_at <= fresh


def no_worker(s: Session, site_name: str, since: datetime, now: datetime) -> str | None:
    """ "no worker has taken queue site.lab for 5 min" when no worker of the site is alive and
    a message for it has waited since ``since``; None when a worker is alive."""
    settings = get_settings().sites.get(site_name)
    if settings is None:
        return f"site {site_name} is not in the settings; no worker can take its work"
    row = s.get(SiteMonitor, site_name)
    if worker_alive(row, settings, now):
        return None
    waited = (now - since).total_seconds()
    queue = QUEUE_PREFIX + site_name
    said = (
        f"no worker has taken queue {queue} for {how_long(waited)}"
        if waited >= 60
        else f"no worker has taken queue {queue} yet"
    )
    seen = row.worker_seen_at if row is not None else None
    if seen is None:
        return f"{said}; no worker of site {site_name} has been seen"
    return f"{said}; its last worker was seen {how_long((now - seen).total_seconds())} ago"


def queue_depths(queues: list[str]) -> dict[str, int | None]:
    """Messages waiting in each queue, as the broker counts them; None for each when the
    broker cannot be reached (said as "unknown", never as 0)."""
    from kombu import Connection
    from kombu.exceptions import ChannelError

    try:
        with Connection(get_settings().broker_url, connect_timeout=3) as conn:
            conn.ensure_connection(max_retries=1, interval_start=0, timeout=3)
            channel = conn.default_channel
            depths: dict[str, int | None] = {}
            for queue in queues:
                try:
                    depths[queue] = channel.queue_declare(queue=queue, passive=True).message_count
                except ChannelError:
                    depths[queue] = 0  # never declared: no worker or producer used it yet
            return depths
    except Exception:
        return dict.fromkeys(queues)


_QUEUED_STATES = tuple(st for st in states.IN_FLIGHT if st != "RUNNING")


def _counts(s: Session, site_name: str) -> dict[str, int]:
    rows = s.execute(
        select(SubJob.state, func.count()).where(SubJob.site == site_name).group_by(SubJob.state)
    )
    return {state: count for state, count in rows}


def admission(s: Session, site_name: str, site: SiteSettings) -> dict[str, Any]:
    """The site's queue limit now, and what counts against it: the jobs its scheduler holds
    (not running) and those being submitted; with how many wait to be admitted."""
    counts = _counts(s, site_name)
    submitting = s.scalar(
        select(func.count()).where(
            SubJob.site == site_name,
            SubJob.state == "PREPROCESSED",
            SubJob.waiting_since.is_(None),
            SubJob.submit_claim.is_not(None),
        )
    )
    waiting = s.scalar(
        select(func.count()).where(
            SubJob.site == site_name,
            SubJob.state == "PREPROCESSED",
            SubJob.waiting_since.is_not(None),
        )
    )
    running = counts.get("RUNNING", 0)
    policy = QueuePolicy(site.max_queued, site.queued_per_running, site.queued_base)
    return {
        "limit": policy.limit(running),
        "queued": sum(counts.get(st, 0) for st in _QUEUED_STATES) + (submitting or 0),
        "running": running,
        "waiting_for_admission": waiting or 0,
    }


def breaker(row: SiteMonitor | None, now: datetime) -> str:
    """The circuit breaker in words."""
    if row is None:
        return "closed"
    if row.breaker_until is not None and row.breaker_until > now:
        return (
            f"open: resting after {row.submit_failures} failed submissions, "
            f"until {stamp(row.breaker_until)}"
        )
    if row.breaker_until is not None:
        return "half-open: the next submission tries the site again"
    if row.submit_failures:
        return f"closed ({row.submit_failures} failed submissions in a row)"
    return "closed"


def _health(s: Session, name: str, depth: int | None, now: datetime) -> dict[str, Any]:
    site = get_settings().sites[name]
    row = s.get(SiteMonitor, name)
    seen = row.worker_seen_at if row is not None else None
    return {
        "site": name,
        "queue": QUEUE_PREFIX + name,
        "worker": {
            "alive": worker_alive(row, site, now),
            "last_seen": stamp(seen),
            "seen_by": row.worker_seen_by if row is not None else None,
        },
        "messages_waiting": depth,
        "jobs": _counts(s, name),
        "admission": admission(s, name, site),
        "breaker": breaker(row, now),
        "pilots": pilot_views.site_pilots(s, name, now) if site.pilots.enabled else None,
        "last_status_query": {
            "at": stamp(row.status_query_at) if row is not None else None,
            "seconds": row.status_query_seconds if row is not None else None,
            "error": row.status_query_error if row is not None else None,
        },
        "last_error": {
            "at": stamp(row.last_error_at) if row is not None else None,
            "message": row.last_error if row is not None else None,
        },
    }


def site_names() -> list[str]:
    return sorted(get_settings().sites)


def all_sites() -> list[dict[str, Any]]:
    """Every configured site's health, in name order."""
    names = site_names()
    depths = queue_depths([QUEUE_PREFIX + n for n in names])
    now = utcnow()
    with read_scope() as s:
        return [_health(s, n, depths[QUEUE_PREFIX + n], now) for n in names]


def one_site(name: str) -> dict[str, Any]:
    """One site's health; NotFound names the sites there are."""
    if name not in get_settings().sites:
        known = ", ".join(site_names()) or "none"
        raise NotFound(f"no site {name!r} in the settings (sites: {known})")
    depth = queue_depths([QUEUE_PREFIX + name])[QUEUE_PREFIX + name]
    with read_scope() as s:
        return _health(s, name, depth, utcnow())
