"""What each subjob step does at its site, apart from Celery: these functions take a subjob
record, do the step's I/O, and return the fields to record. Tests call them directly.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import Row, bindparam, func, select, update
from sqlalchemy.orm import Session

from backends.batchscript import CONTROL_DIR, EXIT_CODE_FILE, SCRIPT_FILE, job_workdir
from backends.runners import runner_for
from backends.schedulers import BatchRequest, scheduler_for
from backends.transfers import TransferContext, transfer_for
from backends.transfers import scope as transfer_scope
from edgeceleryapp import graph, state_store, states
from edgeceleryapp.batch_names import batch_job_name
from edgeceleryapp.db import read_connection, session_scope
from edgeceleryapp.errors import (
    ApplicationNotAllowed,
    EdgeCeleryError,
    Parked,
    PermanentError,
    TransientError,
    UnsafePath,
)
from edgeceleryapp.models import Application, SiteMonitor, SubJob, SubjobView, utcnow
from edgeceleryapp.settings import SiteSettings, get_settings
from edgeceleryapp.site_monitor import (
    ensure_monitor,
    locked_monitor,
    submission_failed,
    submission_succeeded,
)
from edgeceleryapp.state_store import load_subjob
from edgeceleryapp.throttle import Breaker, QueuePolicy
from tasks.retry_policy import Stop
from workflows import children

log = logging.getLogger(__name__)

# Environment passed to application scripts: the worker's basics, never job text.
PASS_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "USER", "LOGNAME")


def site_of(subjob: SubjobView) -> SiteSettings:
    return get_settings().site(subjob.site)


def workdir_of(subjob: SubjobView) -> Path:
    return job_workdir(site_of(subjob).workdir, subjob.id)


def transfer_context(subjob: SubjobView, step: str) -> TransferContext:
    """What the subjob's URLs may name (the site's transfer roots, its own Argo job's staging
    directory: ``backends.transfers.scope``) and its own side, the job's work directory; the
    site's transfer settings; temporary files named after this step."""
    settings = get_settings()
    scope = transfer_scope.for_site(settings, subjob.site, subjob.argo_job_id)
    return TransferContext(
        roots=scope.local_roots(),
        settings=site_of(subjob).transfers,
        token=f"s{subjob.id}-{step}",
        progress=progress_recorder(subjob.id),
        local_roots=[workdir_of(subjob)],
        scope=scope,
    )


def progress_recorder(subjob_id: int, every: float = 5.0) -> Callable[[int], None]:
    """Record bytes moved on the subjob at most every ``every`` seconds (for long transfers)."""
    last = [0.0]

    def record(done: int) -> None:
        now = time.monotonic()
        if now - last[0] >= every:
            last[0] = now
            with session_scope() as s:
                s.execute(update(SubJob).where(SubJob.id == subjob_id).values(transfer_bytes=done))

    return record


def inside(workdir: Path, relative: str) -> Path:
    """A job-supplied relative path, resolved, refused if it leaves the work directory."""
    base = workdir.resolve()
    path = (base / relative).resolve()
    if path != base and base not in path.parents:
        raise UnsafePath(f"config_file: {relative!r} leaves the job's work directory")
    return path


_APPLICATIONS = Application.__table__
_APPLICATION = select(_APPLICATIONS).where(
    _APPLICATIONS.c.name == bindparam("name"), _APPLICATIONS.c.site == bindparam("site")
)


def application_for(subjob: SubjobView) -> Row:
    """The whitelist (the HUST'17 paper, 2.6): only applications registered for this site run. Asked
    by four steps of every subjob, so a compiled Core query, read as a row of the
    application's columns."""
    with read_connection() as conn:
        app = conn.execute(_APPLICATION, {"name": subjob.application, "site": subjob.site}).first()
    if app is None:
        raise ApplicationNotAllowed(
            f"application {subjob.application!r} is not registered at site {subjob.site!r}; "
            "nothing was run"
        )
    return app


def job_env(subjob: SubjobView, workdir: Path, **extra: str) -> dict[str, str]:
    env = {k: os.environ[k] for k in PASS_ENV if k in os.environ}
    env.update(
        EDGECELERY_SUBJOB_ID=str(subjob.id),
        EDGECELERY_WORKDIR=str(workdir),
        EDGECELERY_NUM_NODES=str(subjob.num_nodes),
        EDGECELERY_PROCESSES_PER_NODE=str(subjob.processes_per_node),
        **extra,
    )
    return env


def stage_in(subjob: SubjobView) -> dict:
    application_for(subjob)  # refuse before moving any data
    workdir = workdir_of(subjob)
    (workdir / CONTROL_DIR).mkdir(parents=True, exist_ok=True)
    if subjob.input_url:
        context = transfer_context(subjob, "stage_in")
        transfer_for(subjob.input_url, context, "input_url").download(subjob.input_url, workdir)
    elif subjob.parents_left is not None:  # a join in a graph: each parent's output
        with read_connection() as conn:
            outputs = [(name, url) for name, url in graph.parent_outputs(conn, subjob.id) if url]
        context = transfer_context(subjob, "stage_in")
        for name, url in outputs:
            dest = workdir / name if len(outputs) > 1 else workdir
            dest.mkdir(parents=True, exist_ok=True)
            transfer_for(url, context, f"parents.{name}").download(url, dest)
    children.set_aside_inherited(workdir)
    return {}


def parse_argv(text: str) -> list[str]:
    """A config_script prints the application's arguments as a JSON array of strings."""
    try:
        argv = json.loads(text)
    except json.JSONDecodeError:
        argv = None
    if not isinstance(argv, list) or not all(isinstance(a, str) for a in argv):
        raise PermanentError("config_script must print a JSON array of strings")
    if any("\x00" in a for a in argv):
        raise PermanentError("config_script printed an argument holding a NUL byte")
    return argv


def launcher(site: SiteSettings, subjob: SubjobView) -> list[str]:
    values = {
        "num_nodes": subjob.num_nodes,
        "processes_per_node": subjob.processes_per_node,
        "total_procs": subjob.num_nodes * subjob.processes_per_node,
    }
    return [part.format(**values) for part in site.launcher]


def _run_script(
    site: SiteSettings, what: str, argv: list[str], workdir: Path, env: dict[str, str]
) -> str:
    result = runner_for(site).run(argv, cwd=str(workdir), env=env, timeout=site.command_timeout)
    if not result.ok:
        raise PermanentError(f"{what} exited with code {result.returncode}: {result.tail()}")
    return result.stdout


def preprocess(subjob: SubjobView) -> dict:
    """Turn the job's config_file into an argument list, then run the app's preprocess."""
    app = application_for(subjob)
    site = site_of(subjob)
    workdir = workdir_of(subjob)
    env = job_env(subjob, workdir)
    args: list[str] = []
    if app.config_script:
        argv = [app.config_script]
        if subjob.config_file:
            config = inside(workdir, subjob.config_file)
            if not config.is_file():
                raise PermanentError(
                    f"config_file: {subjob.config_file!r} is not in the job's work directory"
                )
            argv.append(str(config))
        args = parse_argv(_run_script(site, "config_script", argv, workdir, env))
    if app.preprocess:
        _run_script(site, "preprocess", [app.preprocess], workdir, env)
    return {"command": [*launcher(site, subjob), app.executable, *args]}


def claim_submission(subjob: SubjobView, token: str, site: SiteSettings) -> bool:
    """Take the right to submit this attempt, if the site may take it now.

    Only a subjob still PREPROCESSED at this attempt can be claimed: one that is gone, killed,
    failed or moved on (another delivery submitted it, or the poller started a new attempt)
    raises ``Stop``, so the step ends quietly without submitting. Going ahead there would
    start a batch job that no record tracks and no cancel reaches.

    Returns True when the attempt was claimed before (by this very message, delivered again
    after a crash, or by an execution that died: the caller holds the subjob's lease, so no
    other is alive): a batch job may exist already, so the caller looks it up by name first. A
    first claim needs no look-up: nobody can have submitted this attempt without holding the
    claim. A queue over its limit or a resting site means:
    ``Parked``: the subjob waits, with no message and no retry spent, until the site's tick
    admits it (``tasks.poll.admit``), in submission order.
    """
    ensure_monitor(subjob.site)
    now = utcnow()
    parked = _claim(subjob, token, site, now)
    if isinstance(parked, str):
        # Said after the claim's commit, through the one writer of state: the subjob's
        # state_message, its timeline and a status message tell why it waits.
        state_store.note(_SUBS, subjob.id, "PREPROCESSED", parked)
        raise Parked(parked)
    return parked


def _claim(subjob: SubjobView, token: str, site: SiteSettings, now: datetime) -> bool | str:
    """``claim_submission`` in one transaction: whether claimed before, or why it waits (the
    wait is recorded with the subjob, so it commits)."""
    with session_scope() as s:
        monitor = locked_monitor(s, subjob.site)
        current = s.get(SubJob, subjob.id)
        if current is None or (current.state, current.attempt) != ("PREPROCESSED", subjob.attempt):
            now_is = "gone" if current is None else f"{current.state}, attempt {current.attempt}"
            log.info(
                "subjob %s attempt %s: nothing submitted, it is %s",
                subjob.id,
                subjob.attempt,
                now_is,
            )
            raise Stop
        if current.submit_claim is not None:
            # Claimed by this message before, or by an execution that died (the lease we hold
            # says none is alive): the attempt may be at the scheduler already; look it up.
            current.submit_claim, current.submit_claimed_at = token, now
            return True
        wait = _why_wait(s, subjob, site, monitor, now)
        if wait is not None:
            current.waiting_since = current.waiting_since or now
            return f"waiting for admission at {subjob.site}: {wait}"
        current.submit_claim, current.submit_claimed_at = token, now
        current.waiting_since = None
        return False


def _why_wait(
    s: Session, subjob: SubjobView, site: SiteSettings, monitor: SiteMonitor, now: datetime
) -> str | None:
    """Why the site may not take this subjob now (a resting site, a full queue), or None."""
    if monitor.breaker_until is not None:
        if monitor.breaker_until > now:
            return (
                f"the site is resting after {monitor.submit_failures} failed submissions, "
                f"until {monitor.breaker_until.isoformat(timespec='seconds')}Z"
            )
        # The cool-down is over: this submission is the probe; others wait for it.
        monitor.breaker_until = now + timedelta(seconds=site.breaker_cooldown)
    policy = QueuePolicy(site.max_queued, site.queued_per_running, site.queued_base)
    if policy.limit(0) is not None:
        running, queued = _queue_counts(s, subjob)
        limit = policy.limit(running) or 0
        ahead = _waiting_ahead(s, subjob, limit + 1)
        if not policy.admits(running, queued, ahead):
            shown = f"more than {limit}" if ahead > limit else str(ahead)
            return f"{queued} queued (limit {limit}), {shown} ahead"
    return None


_SUBS = SubJob.__table__
# Other subjobs the site's scheduler holds, by state, and those being submitted (claimed, not
# parked); neither reads the parked subjobs, however many wait.
_HELD = (
    select(_SUBS.c.state, func.count())
    .where(
        _SUBS.c.site == bindparam("site"),
        _SUBS.c.id != bindparam("id"),
        _SUBS.c.state.in_(states.IN_FLIGHT),
    )
    .group_by(_SUBS.c.state)
)
_CLAIMED = select(func.count()).where(
    _SUBS.c.site == bindparam("site"),
    _SUBS.c.id != bindparam("id"),
    _SUBS.c.state == "PREPROCESSED",
    _SUBS.c.waiting_since.is_(None),
    _SUBS.c.submit_claim.is_not(None),
)
# Older subjobs waiting to submit, read up to a cap: a claim needs to know only whether they
# fill the queue, so its cost stays that of the queue limit (bench/deep_queue.py).
_AHEAD = select(func.count()).select_from(
    select(_SUBS.c.id)
    .where(
        _SUBS.c.site == bindparam("site"),
        _SUBS.c.state == "PREPROCESSED",
        _SUBS.c.id < bindparam("id"),
        _SUBS.c.waiting_since.is_not(None) | _SUBS.c.submit_claim.is_(None),
    )
    .limit(bindparam("cap"))
    .subquery()
)


def _queue_counts(s: Session, subjob: SubjobView) -> tuple[int, int]:
    """Running jobs, and jobs queued (or being submitted)."""
    params = {"site": subjob.site, "id": subjob.id}
    held = dict(s.execute(_HELD, params).all())
    running = held.pop("RUNNING", 0)
    return running, sum(held.values()) + s.execute(_CLAIMED, params).scalar_one()


def _waiting_ahead(s: Session, subjob: SubjobView, cap: int) -> int:
    """Older subjobs waiting to submit (parked, or not yet claimed), counted up to ``cap``."""
    return s.execute(_AHEAD, {"site": subjob.site, "id": subjob.id, "cap": cap}).scalar_one()


def batch_request(subjob: SubjobView) -> BatchRequest:
    site = site_of(subjob)
    workdir = workdir_of(subjob)
    if not subjob.command:
        raise PermanentError("no command was prepared; preprocess did not run")
    return BatchRequest(
        name=batch_job_name(subjob),
        workdir=workdir,
        argv=list(subjob.command),
        attempt=subjob.attempt,
        queue=subjob.queue or site.queue or None,
        project=subjob.project or site.project or None,
        wall_time_minutes=subjob.wall_time_minutes,
        num_nodes=subjob.num_nodes,
        processes_per_node=subjob.processes_per_node,
        env={"EDGECELERY_SUBJOB_ID": str(subjob.id)},
        options=[*site.scheduler_options, *approved_options(site, subjob)],
    )


def approved_options(site: SiteSettings, subjob: SubjobView) -> list[str]:
    """The job's scheduler_config names one of the site's approved presets (HUST'17 2.1.1)."""
    if not subjob.scheduler_config:
        return []
    try:
        return list(site.scheduler_configs[subjob.scheduler_config])
    except KeyError:
        raise PermanentError(
            f"scheduler_config: {subjob.scheduler_config!r} is not approved at site {subjob.site!r}"
        ) from None


def submit(subjob: SubjobView, token: str) -> dict:
    """Exactly one batch job per attempt: claim, look up by name, submit only if absent."""
    application_for(subjob)
    site = site_of(subjob)
    request = batch_request(subjob)
    claimed_before = claim_submission(subjob, token, site)
    scheduler = scheduler_for(site)
    try:
        batch_id = scheduler.find(request.name) if claimed_before else None
        if batch_id is None:
            script = request.workdir / SCRIPT_FILE
            part = script.with_suffix(".part")
            part.write_text(scheduler.render(request))
            part.replace(script)
            # A retried or resubmitted subjob runs in the same work directory: the exit code
            # an earlier attempt left there must not be read as this attempt's.
            (request.workdir / EXIT_CODE_FILE).unlink(missing_ok=True)
            batch_id = scheduler.submit(script, request)
    except (TransientError, PermanentError):
        submission_failed(subjob.site, Breaker(site.breaker_threshold, site.breaker_cooldown))
        raise
    submission_succeeded(subjob.site)
    return {"batch_job_id": batch_id, "submitted_at": utcnow(), "submit_claim": None}


def cancel_if_untracked(subjob: SubjobView, batch_id: str) -> None:
    """The scheduler accepted ``batch_id`` but the move to SUBMITTED found the subjob no longer
    PREPROCESSED: killed or deleted while we submitted (the operator's cancel came too early to
    find a batch job), or failed by another delivery. Unless the record holds this very batch
    job (another delivery of the step recorded it first), nothing will poll or cancel it ever:
    cancel it now. A cancel that fails is logged with the batch id, for an operator to remove
    by hand: a retry of the step would find the subjob ended and do nothing."""
    current = load_subjob(subjob.id)
    if current is not None and current.state != states.KILLED and current.batch_job_id == batch_id:
        return
    now_is = "gone" if current is None else current.state
    try:
        scheduler_for(site_of(subjob)).cancel(batch_id)
    except EdgeCeleryError as exc:
        log.error(
            "subjob %s is %s; its batch job %s could not be cancelled: %s",
            subjob.id,
            now_is,
            batch_id,
            exc,
        )
        return
    log.warning("subjob %s is %s: cancelled its batch job %s", subjob.id, now_is, batch_id)


def postprocess(subjob: SubjobView) -> dict:
    app = application_for(subjob)
    if app.postprocess:
        workdir = workdir_of(subjob)
        env = job_env(
            subjob,
            workdir,
            EDGECELERY_EXIT_CODE=str(subjob.exit_code or 0),
            EDGECELERY_SUBJOB_NAME=subjob.name,
        )
        _run_script(site_of(subjob), "postprocess", [app.postprocess], workdir, env)
    return {}


def resume_work(subjob: Row) -> frozenset[str]:
    """Which of the steps after the batch job have work for this subjob (the poller passes
    the others: ``next_step.after_batch_end``). A postprocess has when the application has a
    script or the run left a children file, and when the application is no longer registered
    (the step refuses it, as it would have); a stage out has when there is an output URL.
    ``subjob`` is a row of the poller's, with the application's ``postprocess`` and
    ``registered`` (None: not registered at the site)."""
    work = set()
    if subjob.registered is None or subjob.postprocess or children.left_in(workdir_of(subjob)):
        work.add("site.postprocess")
    if subjob.output_url:
        work.add("site.stage_out")
    return frozenset(work)


def stage_out(subjob: SubjobView) -> dict:
    if subjob.output_url:
        context = transfer_context(subjob, "stage_out")
        transfer_for(subjob.output_url, context, "output_url").upload(
            workdir_of(subjob), subjob.output_url
        )
    return {}
