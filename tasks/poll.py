"""The site poller: one tick per site per poll interval (the site worker's clock), whatever the
number of jobs in flight. Each tick reads the exit-code files of the site's jobs in flight (the
fast, authoritative path) and, at most once per status interval, asks the scheduler about the
rest in ONE command. Jobs that ended get their resume chain, less the steps that have nothing
to do for them (walked in the tick's own transaction: ``next_step.after_batch_end``); the rest
stay parked.

Ticks are single-flight across worker processes through leases in ``site_monitors``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace

from sqlalchemy import Row, and_, bindparam, select

from backends.batchscript import read_exit_code
from backends.schedulers import BatchStatus, scheduler_for
from backends.schedulers.base import FAILED, FINISHED
from edgeceleryapp import next_step, states
from edgeceleryapp.brokertransport import batch_producer
from edgeceleryapp.db import read_scope
from edgeceleryapp.errors import EdgeCeleryError
from edgeceleryapp.models import Application, SubJob, utcnow
from edgeceleryapp.next_step import Owed
from edgeceleryapp.settings import SiteSettings, get_settings
from edgeceleryapp.site_monitor import heartbeat, status_queried, take_lease
from edgeceleryapp.state_store import Move, move_subjob, move_subjobs
from tasks import pilots
from tasks.admission import admit
from tasks.reconcile import reconcile_site, sweep_period
from tasks.site_steps import resume_work, workdir_of
from workflows.chains import chain_for, send

log = logging.getLogger(__name__)

LOST = "LOST"  # the cause given to a batch job that vanished without an exit code


@dataclass(frozen=True)
class Verdict:
    """Where the poller moves a subjob: a success state, or a failure with its reason."""

    target: str
    failed: bool = False
    reason: str = ""
    exit_code: int | None = None
    cause: str = ""


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
        if age_seconds <= lost_after:
            return None
        reason = f"batch job unknown to the scheduler, no exit code after {int(age_seconds)}s"
        return Verdict(FINISHED, True, reason + ": lost", cause=LOST)
    detail = f" ({status.reason})" if status.reason else ""
    if status.state == FINISHED:
        reason = "batch job ended without writing an exit code" + detail
        return Verdict(FINISHED, True, reason, status.exit_code, status.cause)
    if status.state == FAILED:
        reason = f"batch job ended: {status.cause or 'failed'}" + detail
        return Verdict(FINISHED, True, reason, status.exit_code, status.cause)
    if states.BALSAM.rank(status.state) > states.BALSAM.rank(state):
        return Verdict(status.state)
    return None


@dataclass
class PollReport:
    in_flight: int = 0
    status_queries: int = 0
    moved: dict[int, str] = field(default_factory=dict)
    finished: list[Owed] = field(default_factory=list)
    admitted: list[int] = field(default_factory=list)
    redriven: list[int] = field(default_factory=list)


# Only the columns a tick reads, as plain rows: with 10,000 jobs in flight, loading ORM objects
# every poll_interval was most of the tick's CPU and tens of MB (bench/scheduler_load.py).
# The rows answer to the same attribute names as a SubJob (id, site, argo_job_id, ...).
_IN_FLIGHT = (
    select(
        SubJob.id,
        SubJob.site,
        SubJob.argo_job_id,
        SubJob.state,
        SubJob.batch_job_id,
        SubJob.attempt,
        SubJob.submitted_at,
        SubJob.updated_at,
        SubJob.waiting_since,
        SubJob.pilot_id,
        SubJob.output_url,
        Application.postprocess,
        Application.id.label("registered"),
    )
    .outerjoin(
        Application,
        and_(Application.name == SubJob.application, Application.site == SubJob.site),
    )
    .where(SubJob.site == bindparam("site"), SubJob.state.in_(states.IN_FLIGHT))
    .order_by(SubJob.id)
)


def poll_site(site_name: str) -> PollReport:
    """One tick of the site: follow its batch jobs, admit waiting subjobs, and (once per
    sweep period) re-drive what lost its message. Single-flight across processes."""
    report = PollReport()
    site = get_settings().site(site_name)
    heartbeat(site_name)
    if not take_lease(site_name, "tick_until", site.poll_interval * 0.8):
        return report
    _poll_batch_jobs(site_name, site, report)
    # The slots those ends freed go first: the admitted subjobs' submit messages are queued
    # ahead of the resume chains, so the site's queue refills while the ended jobs' remaining
    # steps (which hold no slot) wait their turn.
    try:
        report.admitted = admit(site_name, site)
    finally:
        send_resume_chains(report.finished)
    if take_lease(site_name, "sweep_until", sweep_period()):
        report.redriven = reconcile_site(site_name)
    return report


def _poll_batch_jobs(site_name: str, site: SiteSettings, report: PollReport) -> None:
    with read_scope() as s:
        jobs = s.execute(_IN_FLIGHT, {"site": site_name}).all()
    report.in_flight = len(jobs)
    # A pilot site's pilots are batch jobs too: asked about in the same one command.
    live_pilots = pilots.live(site_name) if site.pilots.enabled else []
    pilot_jobs = [p.batch_job_id for p in live_pilots if p.batch_job_id]
    # A pilot whose batch job was never recorded is looked up by name when the scheduler is
    # asked (``pilots.follow``): its worker died between the submission and the record.
    unrecorded = len(pilot_jobs) < len(live_pilots)
    if not jobs and not live_pilots:
        return
    codes = {
        j.id: pilots.exit_code(j) if j.pilot_id else read_exit_code(workdir_of(j)) for j in jobs
    }
    pending = [j for j in jobs if codes[j.id] is None and j.batch_job_id]
    answer: dict[str, BatchStatus] = {}
    if (pending or pilot_jobs or unrecorded) and take_lease(
        site_name, "status_until", site.status_interval * 0.95
    ):
        started, clock = utcnow(), time.monotonic()
        try:
            answer = scheduler_for(site).statuses([j.batch_job_id for j in pending] + pilot_jobs)
            report.status_queries = 1
            status_queried(site_name, started, time.monotonic() - clock, None)
        except EdgeCeleryError as exc:
            log.warning("site %s: status query failed, will ask again: %s", site_name, exc)
            status_queried(site_name, started, time.monotonic() - clock, str(exc))
            pending = []
    asked = {j.id for j in pending} if report.status_queries else set()
    in_pilots: dict[int, BatchStatus] = {}
    if site.pilots.enabled:
        pilots.follow(site_name, site, answer if report.status_queries else None)
        in_pilots = pilots.subjob_statuses(site_name, jobs, codes)
        asked |= set(in_pilots)
    for job in pending:
        # A job that ended between our look at its exit-code file and the scheduler's answer
        # has written the file by now: read it again rather than judge it by the scheduler.
        status = answer.get(job.batch_job_id or "")
        if status is not None and status.state in (FINISHED, FAILED):
            codes[job.id] = read_exit_code(workdir_of(job))
    now = utcnow()
    verdicts: list[tuple[Row, Verdict]] = []
    for job in jobs:
        if codes[job.id] is None and job.id not in asked:
            continue
        age = (now - (job.submitted_at or job.updated_at)).total_seconds()
        status = in_pilots.get(job.id) if job.pilot_id else answer.get(job.batch_job_id or "")
        verdict = judge(job.state, codes[job.id], status, age, site.lost_after)
        if verdict is None:
            continue
        if verdict.failed and verdict.cause in site.resubmit_on:
            if job.attempt < site.max_attempts:
                resubmit(job, verdict, site.max_attempts, report)
                continue
            verdict = replace(
                verdict,
                reason=f"{verdict.reason}; attempt {job.attempt} of "
                f"{site.max_attempts}, no attempts left",
            )
        verdicts.append((job, verdict))
    # The states commit here; the resume chains go later in the tick (``send_resume_chains``).
    # Sent before the commit, a postprocess could arrive ahead of its state and spend a retry
    # waiting for it. A crash in between leaves a finished job without its chain: the
    # reconciler (tasks/reconcile.py) sends the owed step again once the record has made no
    # progress for redrive_after.
    moves: list[Move] = []
    resumes: list[Owed | None] = []
    for job, verdict in verdicts:
        path = states.batch_end_path(job.state, verdict.target, verdict.failed)
        owed = None
        if path[-1] == FINISHED:  # the steps with nothing to do for it are passed here
            passed, owed = next_step.after_batch_end(job, resume_work(job))
            path += passed
        moves.append(
            Move(job.id, job.state, path, verdict.reason, {"exit_code": verdict.exit_code})
        )
        resumes.append(owed)
    made = move_subjobs(moves) if moves else []
    for (job, _), move, owed, moved in zip(verdicts, moves, resumes, made, strict=True):
        if moved:
            report.moved[job.id] = move.path[-1]
            if owed is not None:
                report.finished.append(owed)


def send_resume_chains(finished: list[Owed]) -> None:
    """What the jobs this tick saw end are owed (postprocess, stage out, their Argo job's
    advance), in one broker round trip."""
    owed = [o for o in finished if o.verdict == next_step.STEP]
    if owed:
        with batch_producer(get_settings().broker_url) as producer:
            for o in owed:
                send(chain_for(o), producer)


def resubmit(job: Row, verdict: Verdict, max_attempts: int, report: PollReport) -> None:
    """A resource-side failure: start the next attempt (a new batch job, a new name)."""
    note = f"{verdict.reason}; resubmitting as attempt {job.attempt + 1} of {max_attempts}"
    if move_subjob(
        job.id,
        job.state,
        ["PREPROCESSED"],
        note,
        attempt=job.attempt + 1,
        batch_job_id=None,
        exit_code=None,
        submit_claim=None,
        submitted_at=None,
        pilot_id=None,
    ):
        report.moved[job.id] = "PREPROCESSED"
        send(chain_for(next_step.for_subjob(job, state="PREPROCESSED")))
