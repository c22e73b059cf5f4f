"""What operators read of pilots: a site's pilots for ``site show`` and the sites page (state,
nodes, subjobs running, wall time left, why it was sized so, why it ended), and the pilot that
ran a subjob for ``job show``."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from edgeceleryapp.models import Pilot, SubJob

SHOWN_ENDED = 5  # the most recent ended pilots shown with the live ones


def _left(pilot: Pilot, now: datetime) -> int | None:
    if pilot.state == "ENDED":
        return None
    if pilot.started_at is None:
        return pilot.wall_time_minutes * 60
    return max(0, int(pilot.wall_time_minutes * 60 - (now - pilot.started_at).total_seconds()))


def site_pilots(s: Session, site_name: str, now: datetime) -> list[dict[str, Any]]:
    """The site's live pilots and its last few ended ones, newest first."""
    live = s.scalars(
        select(Pilot)
        .where(Pilot.site == site_name, Pilot.state != "ENDED")
        .order_by(Pilot.id.desc())
    ).all()
    ended = s.scalars(
        select(Pilot)
        .where(Pilot.site == site_name, Pilot.state == "ENDED")
        .order_by(Pilot.id.desc())
        .limit(SHOWN_ENDED)
    ).all()
    pilots = [*live, *ended]
    running = dict(
        s.execute(
            select(SubJob.pilot_id, func.count())
            .where(SubJob.pilot_id.in_([p.id for p in pilots]), SubJob.state == "RUNNING")
            .group_by(SubJob.pilot_id)
        ).all()
    )
    return [
        {
            "id": p.id,
            "state": p.state,
            "batch_job_id": p.batch_job_id,
            "nodes": p.nodes,
            "slots_per_node": p.slots_per_node,
            "subjobs_running": running.get(p.id, 0),
            "wall_time_minutes": p.wall_time_minutes,
            "wall_seconds_left": _left(p, now),
            "sized": p.reason,
            "ended": p.end_reason or None,
        }
        for p in pilots
    ]


def describe(s: Session, pilot_id: int) -> str:
    """One line on the pilot that ran (or runs) a subjob."""
    pilot = s.get(Pilot, pilot_id)
    if pilot is None:
        return f"pilot {pilot_id} (no longer recorded)"
    ended = f": {pilot.end_reason}" if pilot.end_reason else ""
    return f"pilot {pilot.id} (batch job {pilot.batch_job_id}, {pilot.state}{ended})"
