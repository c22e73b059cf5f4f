"""What the pilot integration modules (one per scheduler) share: submitting subjobs, reading
their states and pilots, and the exactly-once check (each run notes its start, each completed
run its end, in the subjob's work directory)."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import func, select

from edgeceleryapp.db import read_scope
from edgeceleryapp.models import Pilot, SubJob

# The application: notes its start, waits for the gate file (when one is named), notes its
# end. A run killed with its pilot leaves a start and no end.
APP = (
    "import os, sys, time\n"
    "open('starts', 'a').write('s\\n')\n"
    "gate = sys.argv[1] if len(sys.argv) > 1 else ''\n"
    "time.sleep(1.0)\n"
    "while gate and not os.path.exists(gate):\n"
    "    time.sleep(0.1)\n"
    "open('ends', 'a').write('e\\n')\n"
)


def submit(site: str, app: str, prefix: str, n: int) -> list[int]:
    from workflows.intake import submit_balsam

    return [
        submit_balsam({"name": f"{prefix}{i}", "site": site, "application": app}) for i in range(n)
    ]


def states_of(ids: list[int]) -> dict[str, int]:
    with read_scope() as s:
        rows = s.execute(
            select(SubJob.state, func.count()).where(SubJob.id.in_(ids)).group_by(SubJob.state)
        ).all()
    return dict(rows)


def all_finished(ids: list[int]) -> bool:
    now = states_of(ids)
    if any(k.endswith("_FAILED") for k in now):
        with read_scope() as s:
            failed = s.execute(
                select(SubJob.id, SubJob.attempt, SubJob.state_message).where(
                    SubJob.id.in_(ids), SubJob.state.like("%_FAILED")
                )
            ).all()
        raise AssertionError(f"{now}: {[tuple(row) for row in failed]}")
    return now.get("JOB_FINISHED", 0) == len(ids)


def pilot(pilot_id: int) -> Pilot:
    with read_scope() as s:
        found = s.get(Pilot, pilot_id)
        assert found is not None
        return found


def running_pilot(ids: list[int]) -> Pilot | None:
    """A pilot with one of these subjobs running in it."""
    with read_scope() as s:
        row = s.execute(
            select(Pilot)
            .join(SubJob, SubJob.pilot_id == Pilot.id)
            .where(Pilot.state == "RUNNING", SubJob.state == "RUNNING", SubJob.id.in_(ids))
        ).first()
    return row[0] if row else None


def resubmitted(ids: list[int]) -> list[SubJob]:
    with read_scope() as s:
        return list(s.scalars(select(SubJob).where(SubJob.id.in_(ids), SubJob.attempt > 1)))


def assert_each_completed_once(site_root: Path, ids: list[int]) -> None:
    for sid in ids:
        ends = site_root / "jobs" / str(sid) / "ends"
        assert ends.read_text() == "e\n", f"subjob {sid} completed once"
