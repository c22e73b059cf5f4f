"""Times as a person reads them: to the second, in this machine's time zone, the zone named
("2024-05-02 14:03:07 CEST"). Records keep UTC and the JSON outputs ISO 8601 in UTC; only
what is printed for a person is local, so that it can be set beside a clock or a log."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

# Keys of the job views that hold a time (``updated_at``, ``waiting_since``, ``lease_until``).
_SUFFIXES = ("_at", "_since", "_until")


def is_time_key(key: str) -> bool:
    return key in ("time", "since") or key.endswith(_SUFFIXES)


def shown(value: datetime | str | None) -> str:
    """``value`` (a datetime, naive meaning UTC, or its ISO 8601 text) in local time; ""
    for none. Text that is not a time is returned as it is."""
    if value is None or value == "":
        return ""
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            return value
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    local = value.astimezone()
    return local.strftime("%Y-%m-%d %H:%M:%S ") + (local.tzname() or local.strftime("%z"))


def shown_fields(row: dict[str, Any]) -> dict[str, Any]:
    """A row of a job view with its times shown locally."""
    return {k: shown(v) if is_time_key(k) and v else v for k, v in row.items()}


def event_time(event: dict[str, Any]) -> str:
    """A timeline entry's time; one the poller noticed late is marked as an upper bound."""
    when = shown(event["time"])
    return f"≤ {when} (seen by the poller)" if event.get("seen_by_poller") else when
