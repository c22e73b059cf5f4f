"""The site poller: one message per site per poll interval (from celery beat), whatever the
number of jobs in flight. Each tick reads the exit-code files of the site's jobs in flight (the
fast, authoritative path) and, at most once per status interval, asks the scheduler about the
rest in ONE command. Jobs that ended get their resume chain; the rest stay parked.

Ticks are single-flight across worker processes through leases in ``site_monitors``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from backends.batchscript import read_exit_code
from backends.schedulers import BatchStatus, scheduler_for
from backends.schedulers.base import FAILED, FINISHED, QUEUED, RUNNING
from edgeceleryapp import states
from edgeceleryapp.celery import app
from edgeceleryapp.db import session_scope
from edgeceleryapp.errors import EdgeCeleryError
from edgeceleryapp.models import SiteMonitor, SubJob, utcnow
from edgeceleryapp.settings import get_settings
from edgeceleryapp.transitions import move_subjob
from tasks.base import StepTask
from tasks.sitework import workdir_of
from workflows.chains import resume_subjob

log = logging.getLogger(__name__)

IN_FLIGHT = ("SUBMITTED", "QUEUED", "RUNNING")


@dataclass(frozen=True)
class Verdict:
    """Where the poller moves a subjob: a success state, or a failure with its reason."""

    target: str
    failed: bool = False
    reason: str = ""
    exit_code: int | None = None


def judge(
    state: str,
    exit_code: int | None,
    status: BatchStatus | None,
    age_seconds: float,
    lost_after: float,
) -> Verdict | None:
    """Decide from what we see of one batch job; None means nothing new.

    The exit-code file wins over the scheduler. A job the scheduler no longer knows is never
    assumed done: without an exit code it is declared lost only after ``lost_after``.
    """
    if exit_code is not None:
        if exit_code == 0:
            return Verdict(FINISHED, exit_code=0)
        return Verdict(FINISHED, True, f"application exited with code {exit_code}", exit_code)
    if status is None:
        if age_seconds > lost_after:
            return Verdict(
                FINISHED,
                True,
                "batch job unknown to the scheduler and left no exit "
                f"code after {int(age_seconds)}s: lost",
            )
        return None
    if status.state == FINISHED:
        reason = status.reason or "batch job ended without writing an exit code"
        return Verdict(FINISHED, True, reason, status.exit_code)
    if status.state == FAILED:
        return Verdict(FINISHED, True, status.reason or "batch job failed", status.exit_code)
    if status.state in (QUEUED, RUNNING):
        return (
            Verdict(status.state)
            if states.BALSAM.rank(status.state) > states.BALSAM.rank(state)
            else None
        )
    return None


def path_for(state: str, verdict: Verdict) -> list[str]:
    """The states to walk from ``state``: the job passed through QUEUED and RUNNING even if we
    saw it late. A failure is recorded as the failure of the step that was under way."""
    if not verdict.failed:
        return states.walk(states.BALSAM, state, verdict.target)
    path = states.walk(states.BALSAM, state, "RUNNING") if state != "RUNNING" else []
    return [*path, states.failed(verdict.target)]


def _claim(site: str, column: str, period: float) -> bool:
    """Take the site's lease named ``column`` for ``period`` seconds if it has expired."""
    now = utcnow()
    col = getattr(SiteMonitor, column)
    for _ in range(2):
        try:
            with session_scope() as s:
                if s.get(SiteMonitor, site) is None:
                    s.add(
                        SiteMonitor(site=site, tick_until=datetime.min, status_until=datetime.min)
                    )
                    s.flush()
                done = s.execute(
                    update(SiteMonitor)
                    .where(SiteMonitor.site == site, col <= now)
                    .values({column: now + timedelta(seconds=period)})
                )
                return done.rowcount == 1
        except IntegrityError:  # another process created the row first
            continue
    return False


@dataclass
class PollReport:
    in_flight: int = 0
    status_queries: int = 0
    moved: dict[int, str] = field(default_factory=dict)


def poll_site(site_name: str) -> PollReport:
    report = PollReport()
    site = get_settings().site(site_name)
    if not _claim(site_name, "tick_until", site.poll_interval * 0.8):
        return report
    with session_scope() as s:
        jobs = list(
            s.scalars(
                select(SubJob)
                .where(SubJob.site == site_name, SubJob.state.in_(IN_FLIGHT))
                .order_by(SubJob.id)
            )
        )
    report.in_flight = len(jobs)
    if not jobs:
        return report
    codes = {j.id: read_exit_code(workdir_of(j)) for j in jobs}
    pending = [j for j in jobs if codes[j.id] is None and j.batch_job_id]
    answer: dict[str, BatchStatus] = {}
    if pending and _claim(site_name, "status_until", site.status_interval * 0.95):
        try:
            answer = scheduler_for(site).statuses([j.batch_job_id for j in pending])
            report.status_queries = 1
        except EdgeCeleryError as exc:
            log.warning("site %s: status query failed, will ask again: %s", site_name, exc)
            pending = []
    asked = {j.id for j in pending} if report.status_queries else set()
    now = utcnow()
    for job in jobs:
        if codes[job.id] is None and job.id not in asked:
            continue
        age = (now - (job.submitted_at or job.updated_at)).total_seconds()
        verdict = judge(
            job.state, codes[job.id], answer.get(job.batch_job_id or ""), age, site.lost_after
        )
        if verdict is None:
            continue
        if not verdict.failed and verdict.target == FINISHED:
            # Sent before the state commits: a crash in between leaves a resume chain that
            # waits for the state, never a finished job without one.
            resume_subjob(job).apply_async()
        if move_subjob(
            job.id,
            job.state,
            path_for(job.state, verdict),
            verdict.reason,
            exit_code=verdict.exit_code,
        ):
            report.moved[job.id] = path_for(job.state, verdict)[-1]
    return report


@app.task(bind=True, base=StepTask, name="site.poll")
def poll(self: StepTask, site_name: str) -> dict:
    """One poll tick for a site (sent by celery beat to ``site.<name>``)."""
    report = poll_site(site_name)
    return {
        "in_flight": report.in_flight,
        "status_queries": report.status_queries,
        "moved": len(report.moved),
    }
