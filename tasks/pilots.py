"""Pilots, the site worker's side: a site with ``[sites.X.pilots] enabled`` runs its subjobs
inside pilot batch jobs instead of one batch job each (seed designs: Balsam's launcher,
PanDA's pilots). Everything here runs in the site's tick (tasks/poll.py), single-flight:

- ``wait_for_pilot``: ``site.submit`` at a pilot site parks the subjob (no message) for the
  tick to assign;
- ``follow``: each pilot's state from its launcher's files (heartbeat, last word) and the
  scheduler's answer, asked in the tick's one status command;
- ``subjob_statuses``: what each assigned subjob's pilot says of it, in the scheduler's terms,
  so the poller judges it as it judges a batch job (the exit code of its attempt wins; a pilot
  that ended before the subjob did is a resource-side failure, ``PILOT_ENDED``, and the
  site's resubmission rules apply); an assignment the launcher never claimed goes back to the
  pool with its attempt unspent;
- ``assign``: the oldest waiting subjobs to pilots with free slots (a compare-and-set in the
  database, then the file in the pilot's inbox), then a new pilot if work is left over and
  the site's limits allow (sized by edgeceleryapp/pilot_sizing.py).
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import Row, bindparam, select, update

from backends.backfill import after_taking
from backends.backfill_probe import probe
from backends.batchscript import SCRIPT_FILE
from backends.schedulers import BatchRequest, BatchStatus, scheduler_for
from backends.schedulers.base import FAILED, FINISHED, QUEUED, RUNNING, Cause
from edgeceleryapp import pilot_inbox as inbox
from edgeceleryapp import pilot_slots as slots
from edgeceleryapp import state_store, states
from edgeceleryapp.batch_names import instance_tag
from edgeceleryapp.db import read_connection, session_scope
from edgeceleryapp.errors import EdgeCeleryError, Parked, PermanentError
from edgeceleryapp.models import Pilot, SiteMonitor, SubJob, SubjobView, utcnow
from edgeceleryapp.pilot_sizing import Limits, Plan, Waiting, size_pilot
from edgeceleryapp.settings import PilotSettings, SiteSettings
from edgeceleryapp.site_monitor import backfill_seen, ensure_monitor
from edgeceleryapp.state_store import move_subjob
from tasks.retry_policy import Stop
from tasks.site_steps import job_env, site_of, workdir_of

log = logging.getLogger(__name__)

LIVE = ("QUEUED", "RUNNING")
ENDED = "ENDED"
_SUBS = SubJob.__table__
_PILOTS = Pilot.__table__


def pilot_dir(site: SiteSettings, pilot_id: int) -> Path:
    return site.workdir / "pilots" / str(pilot_id)


def pilot_batch_name(pilot_id: int) -> str:
    return f"ec{instance_tag()}_p{pilot_id}"


def limits_of(pilots: PilotSettings) -> Limits:
    return Limits(
        pilots.max_pilots,
        pilots.min_nodes,
        pilots.max_nodes,
        pilots.min_wall_minutes,
        pilots.max_wall_minutes,
        pilots.slots_per_node,
    )


def check_fits(subjob: SubjobView, pilots: PilotSettings) -> None:
    """A subjob no pilot of the site could hold fails at once, naming the field."""
    if subjob.num_nodes > pilots.max_nodes:
        raise PermanentError(
            f"num_nodes: {subjob.num_nodes} is more than this site's pilots have "
            f"(pilots.max_nodes {pilots.max_nodes})"
        )
    if subjob.wall_time_minutes and subjob.wall_time_minutes > pilots.max_wall_minutes:
        raise PermanentError(
            f"wall_time_minutes: {subjob.wall_time_minutes} is more than this site's pilots "
            f"last (pilots.max_wall_minutes {pilots.max_wall_minutes})"
        )


_PARK = (
    update(_SUBS)
    .where(
        _SUBS.c.id == bindparam("sid"),
        _SUBS.c.state == "PREPROCESSED",
        _SUBS.c.attempt == bindparam("the_attempt"),
    )
    .values(waiting_since=bindparam("now"), submit_claim=None, dispatched_at=None)
)


def wait_for_pilot(subjob: SubjobView) -> dict:
    """``site.submit`` at a pilot site: the subjob waits, parked, for the tick to assign it to
    a pilot. A subjob no longer PREPROCESSED at this attempt ends the step quietly."""
    site = site_of(subjob)
    if not subjob.command:
        raise PermanentError("no command was prepared; preprocess did not run")
    check_fits(subjob, site.pilots)
    ensure_monitor(subjob.site)
    with session_scope() as s:
        moved = s.execute(_PARK, {"sid": subjob.id, "the_attempt": subjob.attempt, "now": utcnow()})
    if moved.rowcount == 0:
        raise Stop
    why = f"waiting for a pilot at {subjob.site}"
    state_store.note(_SUBS, subjob.id, "PREPROCESSED", why)
    raise Parked(why)


@dataclass
class PilotView:
    id: int
    state: str
    batch_job_id: str | None
    nodes: int
    slots_per_node: int
    wall_time_minutes: int
    directory: Path
    submitted_at: datetime
    started_at: datetime | None
    end_reason: str

    def left(self, now: datetime) -> float:
        """Seconds of wall time left (all of it while queued)."""
        if self.started_at is None:
            return self.wall_time_minutes * 60.0
        return self.wall_time_minutes * 60.0 - (now - self.started_at).total_seconds()


_COLUMNS = (
    _PILOTS.c.id,
    _PILOTS.c.state,
    _PILOTS.c.batch_job_id,
    _PILOTS.c.nodes,
    _PILOTS.c.slots_per_node,
    _PILOTS.c.wall_time_minutes,
    _PILOTS.c.directory,
    _PILOTS.c.submitted_at,
    _PILOTS.c.started_at,
    _PILOTS.c.end_reason,
)


def _view(row: Row) -> PilotView:
    return PilotView(*row[:6], Path(row.directory), *row[7:])


def live(site_name: str) -> list[PilotView]:
    query = select(*_COLUMNS).where(_PILOTS.c.site == site_name, _PILOTS.c.state.in_(LIVE))
    with read_connection() as conn:
        return [_view(r) for r in conn.execute(query.order_by(_PILOTS.c.id))]


def _by_ids(ids: set[int]) -> dict[int, PilotView]:
    if not ids:
        return {}
    with read_connection() as conn:
        rows = conn.execute(select(*_COLUMNS).where(_PILOTS.c.id.in_(ids)))
        return {r.id: _view(r) for r in rows}


def _set(pilot: PilotView, expected: str, **values: object) -> bool:
    """Compare-and-set a pilot's record: False when another tick moved it first."""
    with session_scope() as s:
        done = s.execute(
            update(_PILOTS)
            .where(_PILOTS.c.id == pilot.id, _PILOTS.c.state == expected)
            .values(**values)
        )
    return done.rowcount == 1


def follow(site_name: str, site: SiteSettings, answer: dict[str, BatchStatus] | None) -> None:
    """Bring the site's live pilots' records up to date. ``answer`` is the tick's status
    command for their batch jobs, None when the tick did not ask the scheduler."""
    now = utcnow()
    for pilot in live(site_name):
        last_word = inbox.ended(pilot.directory)
        beat = inbox.heartbeat_time(pilot.directory)
        beat_at = _naive_utc(beat) if beat is not None else None
        why = ""
        if last_word is not None:
            why = f"its launcher ended: {last_word}"
        elif pilot.batch_job_id is None:
            # Its worker was killed between the submission and recording the batch job, or
            # before submitting: looked up by name when the scheduler is asked, and before
            # it is called never submitted. A look that fails decides nothing.
            overdue = (now - pilot.submitted_at).total_seconds() > site.lost_after
            if answer is not None or overdue:
                asked, found = _found_by_name(site, pilot)
                if found is not None:
                    _set(pilot, pilot.state, batch_job_id=found)
                elif asked and overdue and beat_at is None:
                    why = "its batch job was never submitted"
        elif answer is not None:
            status = answer.get(pilot.batch_job_id)
            age = (now - pilot.submitted_at).total_seconds()
            if status is None and age > site.lost_after:
                why = f"its batch job {pilot.batch_job_id} is unknown to the scheduler"
            elif status is not None and status.state in (FINISHED, FAILED):
                cause = status.cause or ("ended" if status.state == FINISHED else "failed")
                detail = f" ({status.reason})" if status.reason else ""
                why = f"its batch job {pilot.batch_job_id} ended: {cause}{detail}"
        if not why and pilot.state == "RUNNING" and beat_at is not None:
            silent = (now - beat_at).total_seconds()
            if silent > site.pilots.heartbeat_timeout:
                why = f"no heartbeat for {int(silent)} s"
                _cancel(site, pilot)
        if why:
            if _set(
                pilot, pilot.state, state=ENDED, ended_at=now, end_reason=why, heartbeat_at=beat_at
            ):
                log.info("site %s: pilot %s ended: %s", site_name, pilot.id, why)
        elif pilot.state == "QUEUED" and beat_at is not None:
            _set(pilot, "QUEUED", state="RUNNING", started_at=beat_at, heartbeat_at=beat_at)
        elif beat_at is not None:
            _set(pilot, pilot.state, heartbeat_at=beat_at)


def _naive_utc(timestamp: float) -> datetime:
    return datetime.fromtimestamp(timestamp, UTC).replace(tzinfo=None)


def _found_by_name(site: SiteSettings, pilot: PilotView) -> tuple[bool, str | None]:
    """Whether the scheduler could be asked, and the pilot's batch job as it knows it by the
    name it was given (None: it knows none)."""
    try:
        return True, scheduler_for(site).find(pilot_batch_name(pilot.id))
    except EdgeCeleryError as exc:
        log.warning("pilot %s: could not look its batch job up by name: %s", pilot.id, exc)
        return False, None


def _cancel(site: SiteSettings, pilot: PilotView) -> None:
    """A pilot taken for dead is removed from the scheduler, so it cannot run anything more."""
    batch_id = pilot.batch_job_id or _found_by_name(site, pilot)[1]
    if batch_id:
        with contextlib.suppress(EdgeCeleryError):
            scheduler_for(site).cancel(batch_id)


def assignment_of(subjob: SubjobView) -> inbox.Assignment:
    workdir = workdir_of(subjob)
    return inbox.Assignment(
        subjob_id=subjob.id,
        attempt=subjob.attempt,
        workdir=str(workdir),
        argv=list(subjob.command or []),
        num_nodes=subjob.num_nodes,
        processes_per_node=subjob.processes_per_node,
        wall_time_minutes=subjob.wall_time_minutes,
        env=job_env(subjob, workdir),
    )


def exit_code(job: Row) -> int | None:
    """The exit code of this attempt, if the pilot wrote it."""
    return inbox.read_exit_code(workdir_of(job), job.attempt)


def subjob_statuses(
    site_name: str, jobs: list[Row], codes: dict[int, int | None]
) -> dict[int, BatchStatus]:
    """For each subjob in a pilot without an exit code: what its pilot says of it."""
    waiting = [j for j in jobs if j.pilot_id is not None and codes[j.id] is None]
    pilots = _by_ids({j.pilot_id for j in waiting})
    out: dict[int, BatchStatus] = {}
    for job in waiting:
        pilot = pilots.get(job.pilot_id)
        name = inbox.assignment_name(job.id, job.attempt)
        if pilot is None:
            out[job.id] = BatchStatus(FAILED, reason="its pilot is gone", cause=Cause.PILOT_ENDED)
            continue
        held = inbox.where(pilot.directory, name)
        if pilot.state != ENDED:
            if held is None:  # the worker died between the assignment and its file
                inbox.post(pilot.directory, assignment_of(_full(job.id)))
                held = inbox.INBOX
            out[job.id] = BatchStatus(QUEUED if held == inbox.INBOX else RUNNING)
            continue
        codes[job.id] = exit_code(job)  # written just before the pilot ended
        if codes[job.id] is not None:
            continue
        unclaimed = held == inbox.INBOX and inbox.take_back(pilot.directory, name)
        if unclaimed or held == inbox.RETURNED:
            _back_to_pool(job, pilot)
            continue
        reason = f"pilot {pilot.id} (batch job {pilot.batch_job_id}) ended: {pilot.end_reason}"
        out[job.id] = BatchStatus(FAILED, reason=reason, cause=Cause.PILOT_ENDED)
    return out


def _full(subjob_id: int) -> Row:
    row = state_store.load_subjob(subjob_id)
    assert row is not None
    return row


# What the event says when a pilot that ended gives back a subjob it never started: the one
# move back to PREPROCESSED that follows no failure (bench/chaos.py tells it from a regression).
GIVEN_BACK = "ended before starting it: waiting for another pilot"


def cancel_run(subjob: SubjobView) -> None:
    """A killed subjob assigned to a pilot: the launcher kills its run (or never starts it)."""
    pilot = _by_ids({subjob.pilot_id}).get(subjob.pilot_id) if subjob.pilot_id else None
    if pilot is not None:
        inbox.cancel(pilot.directory, inbox.assignment_name(subjob.id, subjob.attempt))


def _back_to_pool(job: Row, pilot: PilotView) -> None:
    """Its pilot ended before claiming it: nothing of it ran, it waits for another pilot with
    the same attempt."""
    move_subjob(
        job.id,
        job.state,
        ["PREPROCESSED"],
        f"pilot {pilot.id} {GIVEN_BACK}",
        pilot_id=None,
        waiting_since=utcnow(),
        submitted_at=None,
    )


_HELD = select(_SUBS.c.pilot_id, _SUBS.c.num_nodes, _SUBS.c.processes_per_node).where(
    _SUBS.c.site == bindparam("site"),
    _SUBS.c.state.in_(states.IN_FLIGHT),
    _SUBS.c.pilot_id.in_(bindparam("pilots", expanding=True)),
)
_WAITING = (
    select(
        _SUBS.c.id,
        _SUBS.c.attempt,
        _SUBS.c.num_nodes,
        _SUBS.c.processes_per_node,
        _SUBS.c.wall_time_minutes,
    )
    .where(
        _SUBS.c.site == bindparam("site"),
        _SUBS.c.state == "PREPROCESSED",
        _SUBS.c.waiting_since.is_not(None),
    )
    .order_by(_SUBS.c.id)
    .limit(bindparam("cap"))
)
_BREAKER = select(SiteMonitor.breaker_until).where(SiteMonitor.site == bindparam("site"))


def assign(site_name: str, site: SiteSettings) -> list[int]:
    """Assign the oldest waiting subjobs to pilots with room, then submit a pilot for the
    rest if the site's limits allow; the ids assigned."""
    spn_site = site.pilots.slots_per_node
    now = utcnow()
    pilots = live(site_name)
    free: dict[int, list[int] | None] = {}
    if pilots:
        held: dict[int, list[slots.Need]] = defaultdict(list)
        with read_connection() as conn:
            rows = conn.execute(_HELD, {"site": site_name, "pilots": [p.id for p in pilots]})
            for r in rows:
                held[r.pilot_id].append(slots.need_of(r.num_nodes, r.processes_per_node, spn_site))
        for p in pilots:
            free[p.id] = slots.free_after(p.nodes, p.slots_per_node, held[p.id])
    capacity = site.pilots.max_pilots * site.pilots.max_nodes * spn_site
    with read_connection() as conn:
        waiting = conn.execute(_WAITING, {"site": site_name, "cap": 2 * capacity}).all()
    # Running pilots first (the subjob starts now), the longest-lived first among them.
    order = sorted(pilots, key=lambda p: (p.state != "RUNNING", p.id))
    assigned: list[int] = []
    left: list[Row] = []
    for job in waiting:
        need = slots.need_of(job.num_nodes, job.processes_per_node, spn_site)
        target = None
        for p in order:
            room = free.get(p.id)
            if room is None or (job.wall_time_minutes and job.wall_time_minutes * 60 > p.left(now)):
                continue
            where = slots.place(room, need, p.slots_per_node)
            if where is not None:
                slots.take(room, where, need)
                target = p
                break
        if target is None:
            left.append(job)
            continue
        note = f"assigned to pilot {target.id} (batch job {target.batch_job_id})"
        if move_subjob(
            job.id,
            "PREPROCESSED",
            ["SUBMITTED"],
            note,
            pilot_id=target.id,
            waiting_since=None,
            submitted_at=now,
            batch_job_id=None,
            submit_claim=None,
        ):
            inbox.post(target.directory, assignment_of(_full(job.id)))
            assigned.append(job.id)
    _grow(site_name, site, pilots, free, left)
    return assigned


def _grow(
    site_name: str,
    site: SiteSettings,
    pilots: list[PilotView],
    free: dict[int, list[int] | None],
    left: list[Row],
) -> None:
    """Submit one more pilot when work is left waiting and the limits allow."""
    if not left:
        return
    with read_connection() as conn:
        resting = conn.execute(_BREAKER, {"site": site_name}).scalar()
    if resting is not None and resting > utcnow():
        return
    spn = site.pilots.slots_per_node
    needs = [slots.need_of(j.num_nodes, j.processes_per_node, spn) for j in left]
    walls = [j.wall_time_minutes or 0 for j in left]
    work = Waiting(
        count=len(left),
        slots=sum(n.nodes * n.slots for n in needs),
        widest=max(n.nodes for n in needs),
        longest_minutes=max(walls),
        slot_minutes=sum(n.nodes * n.slots * w for n, w in zip(needs, walls, strict=True)),
    )
    # Queued pilots' free slots count as coming; running pilots' are full for this work.
    coming = sum(sum(free[p.id] or []) for p in pilots if p.state == "QUEUED")
    limits = limits_of(site.pilots)
    decision = size_pilot(work, coming, len(pilots), limits)
    if decision.plan is None:
        return
    # Only now, with a pilot due, is the scheduler asked which nodes are idle and for how
    # long (a command or two): the pilot is then cut to fit a backfill window if one fits.
    windows = probe(site_name, site).windows
    if windows is not None:
        decision = size_pilot(work, coming, len(pilots), limits, windows)
        # Kept for the choice among candidate sites, less what this pilot is about to take.
        taken = decision.plan.nodes if decision.plan is not None else 0
        backfill_seen(site_name, after_taking(windows, taken))
    if decision.plan is not None:
        submit_pilot(site_name, site, decision.plan, decision.reason)


def submit_pilot(site_name: str, site: SiteSettings, plan: Plan, reason: str) -> int:
    """One pilot batch job: its record first (its id names the batch job and directory),
    then its files, then the scheduler. A failure ends the record with the reason and counts
    against the site's breaker, as a subjob's submission does."""
    from edgeceleryapp.site_monitor import submission_failed, submission_succeeded
    from edgeceleryapp.throttle import Breaker

    with session_scope() as s:
        pilot = Pilot(
            site=site_name,
            nodes=plan.nodes,
            slots_per_node=site.pilots.slots_per_node,
            wall_time_minutes=plan.wall_minutes,
            reason=reason,
        )
        s.add(pilot)
        s.flush()
        pilot_id = pilot.id
        directory = pilot_dir(site, pilot_id)
        pilot.directory = str(directory)
    inbox.create(
        directory,
        inbox.PilotConfig(
            pilot_id=pilot_id,
            nodes=plan.nodes,
            slots_per_node=site.pilots.slots_per_node,
            wall_seconds=plan.wall_minutes * 60.0,
            idle_exit_seconds=site.pilots.idle_exit_seconds,
        ),
    )
    command = site.pilots.command or [sys.executable, "-m", "edgeceleryapp.cli"]
    request = BatchRequest(
        name=pilot_batch_name(pilot_id),
        workdir=directory,
        argv=[*command, "pilot", "run", str(directory)],
        queue=site.queue or None,
        project=site.project or None,
        wall_time_minutes=plan.wall_minutes,
        num_nodes=plan.nodes,
        # The allocation's nodes; how many processes each runs is the launcher's business
        # (slots_per_node). A site whose scheduler must be told to give whole nodes says so
        # in scheduler_options (e.g. "--exclusive").
        processes_per_node=1,
        options=list(site.scheduler_options),
    )
    scheduler = scheduler_for(site)
    script = directory / SCRIPT_FILE
    try:
        script.write_text(scheduler.render(request))
        batch_id = scheduler.submit(script, request)
    except EdgeCeleryError as exc:
        submission_failed(site_name, Breaker(site.breaker_threshold, site.breaker_cooldown))
        with session_scope() as s:
            s.execute(
                update(_PILOTS)
                .where(_PILOTS.c.id == pilot_id)
                .values(state=ENDED, ended_at=utcnow(), end_reason=f"submission failed: {exc}")
            )
        log.warning("site %s: pilot %s not submitted: %s", site_name, pilot_id, exc)
        return pilot_id
    submission_succeeded(site_name)
    with session_scope() as s:
        s.execute(update(_PILOTS).where(_PILOTS.c.id == pilot_id).values(batch_job_id=batch_id))
    log.info(
        "site %s: pilot %s submitted as batch job %s (%s nodes, %s min): %s",
        site_name,
        pilot_id,
        batch_id,
        plan.nodes,
        plan.wall_minutes,
        reason,
    )
    return pilot_id
