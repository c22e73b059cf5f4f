"""How many of our batch jobs a site's scheduler may hold queued, and when a site is resting.

Pure policy. aCT ("ARC Control Tower", 3.2) keeps N_queued <= a * N_running + b per queue (a = 0.15,
b = 100 there); facilities also cap queued jobs outright (Theta allowed 20). Either, both or
neither may be set for a site. Waiting subjobs go in submission order and spend no retries.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta


@dataclass(frozen=True)
class QueuePolicy:
    max_queued: int | None = None
    a: float | None = None
    b: int | None = None

    def limit(self, running: int) -> int | None:
        """The most jobs we may have queued now; None means no limit."""
        limits = []
        if self.max_queued is not None:
            limits.append(self.max_queued)
        if self.a is not None or self.b is not None:
            limits.append(math.floor((self.a or 0.0) * running) + (self.b or 0))
        return min(limits) if limits else None

    def free(self, running: int, queued: int) -> int | None:
        """How many more jobs may be queued now; None means no limit."""
        limit = self.limit(running)
        return None if limit is None else max(0, limit - queued)

    def admits(self, running: int, queued: int, ahead: int) -> bool:
        """May the subjob with ``ahead`` older subjobs waiting be submitted now?"""
        limit = self.limit(running)
        return limit is None or queued + ahead < limit


@dataclass(frozen=True)
class Breaker:
    """Stop submitting to a site after ``threshold`` submission failures in a row, and try
    again (one probe at a time) after ``cooldown`` seconds."""

    threshold: int
    cooldown: float

    def after_failure(self, failures: int, now: datetime) -> datetime | None:
        """When the site may be tried again, if this failure opens the breaker."""
        if failures >= self.threshold:
            return now + timedelta(seconds=self.cooldown)
        return None
