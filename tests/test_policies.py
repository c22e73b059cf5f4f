"""Submission policies: queue limits (max_queued, aCT's a * running + b), the circuit
breaker, resubmission of resource-side failures, and cancel."""

from __future__ import annotations

import subprocess
from datetime import datetime
from pathlib import Path

import pytest
from celery.canvas import _chain

from backends.batchscript import SCRIPT_FILE, WRAPPER, alive, read_int
from backends.schedulers import local
from backends.schedulers.base import FAILED, NODE_FAIL, BatchStatus
from backends.schedulers.local import MARK, LocalScheduler
from edgeceleryapp import applications, job_control
from edgeceleryapp.db import session_scope
from edgeceleryapp.devstack import wait_for
from edgeceleryapp.errors import InvalidState, Parked, PermanentError
from edgeceleryapp.models import Application, SiteMonitor, SubJob
from edgeceleryapp.settings import get_settings, reset_settings
from edgeceleryapp.throttle import Breaker, QueuePolicy
from tasks import admission, poll, site, site_steps
from tasks import argo as argo_tasks
from tests.helpers import (
    SUBJOB_PATH,
    argo_message,
    balsam_message,
    batch_name,
    captured_cancels,
    echo_app,
    poll_until_ended,
    script,
    subjob,
    subjob_states,
)
from workflows.intake import submit_argo, submit_balsam


def set_site(env, **values) -> None:
    """Append settings to site alpha's table and reload them."""
    text = env.config.read_text()
    extra = "".join(f"{k} = {v}\n" for k, v in values.items())
    text = text.replace("[sites.alpha]\n", "[sites.alpha]\n" + extra)
    env.config.write_text(text)
    reset_settings()


def prepared(env, n: int, app: str = "echo") -> list[int]:
    ids = [submit_balsam(balsam_message(app=app), start=False) for _ in range(n)]
    for job_id in ids:
        site.execute("stage_in", job_id)
        site.execute("preprocess", job_id)
    return ids


def test_queue_policy_is_the_smaller_of_cap_and_act_formula():
    assert QueuePolicy().limit(1000) is None
    assert QueuePolicy(max_queued=20).limit(1000) == 20
    assert QueuePolicy(a=0.15, b=100).limit(1000) == 250
    assert QueuePolicy(max_queued=20, a=0.15, b=100).limit(1000) == 20
    assert QueuePolicy(max_queued=5).admits(running=0, queued=4, ahead=0)
    assert not QueuePolicy(max_queued=5).admits(running=0, queued=4, ahead=1)


def test_breaker_opens_at_the_threshold():
    now = datetime(2026, 1, 1)
    breaker = Breaker(threshold=3, cooldown=60)
    assert breaker.after_failure(2, now) is None
    assert (breaker.after_failure(3, now) - now).total_seconds() == 60


def test_max_queued_holds_back_later_subjobs_in_submission_order(env):
    set_site(env, max_queued=2)
    echo_app(env.root, "alpha", name="sleeper")
    ids = prepared(env, 4, app="sleeper")
    outcomes = {}
    for job_id in reversed(ids):  # the youngest ask first, and still wait their turn
        try:
            site.execute("submit", job_id, token=f"t{job_id}")
            outcomes[job_id] = "submitted"
        except Parked:
            outcomes[job_id] = "waiting"
    assert [outcomes[i] for i in ids] == ["submitted", "submitted", "waiting", "waiting"]
    assert [subjob(i).attempt for i in ids] == [1, 1, 1, 1], "waiting spends nothing"
    assert all(subjob(i).waiting_since is not None for i in ids[2:]), "parked, in order"
    assert subjob(ids[2]).state_message == (
        "waiting for admission at alpha: 0 queued (limit 2), 2 ahead"
    )


def test_a_waiting_subjob_sends_no_message_and_the_tick_admits_it(env, monkeypatch):
    set_site(env, max_queued=1)
    echo_app(env.root, "alpha")
    first, second = prepared(env, 2)
    site.execute("submit", first, token="a")
    sent = []
    monkeypatch.setattr(
        "celery.canvas.Signature.apply_async", lambda sig, *a, **k: sent.append(sig)
    )
    site.submit.apply(args=(second,))
    assert subjob(second).state == "PREPROCESSED"
    assert subjob(second).waiting_since is not None
    assert sent == [], "a waiting subjob is parked: no message, no retry"
    admitted = []
    monkeypatch.setattr(admission, "send", lambda sig, producer=None: admitted.append(sig))
    assert admission.admit("alpha", get_settings().site("alpha")) == [], "the queue is full"
    poll_until_ended(first)  # the tick sees the first batch job end, and admits the next
    assert [(s.task, s.args) for s in admitted] == [("site.submit", (second,))]
    assert subjob(second).waiting_since is None


def test_circuit_breaker_rests_the_site_after_repeated_failures(env, monkeypatch):
    set_site(env, breaker_threshold=2, breaker_cooldown=3600)
    echo_app(env.root, "alpha")
    ids = prepared(env, 3)

    def refuse(self, script_path, request):
        raise PermanentError("submit: queue is closed")

    monkeypatch.setattr("backends.schedulers.local.LocalScheduler.submit", refuse)
    for job_id in ids[:2]:
        with pytest.raises(PermanentError):
            site.execute("submit", job_id, token=f"t{job_id}")
    with pytest.raises(Parked, match="resting after 2 failed submissions"):
        site.execute("submit", ids[2], token="t3")
    # After the cool-down the next submission is the probe; success closes the breaker.
    monkeypatch.undo()
    with session_scope() as s:
        s.get(SiteMonitor, "alpha").breaker_until = datetime(2000, 1, 1)
    site.execute("submit", ids[2], token="t3")
    assert subjob(ids[2]).state == "SUBMITTED"
    with session_scope() as s:
        row = s.get(SiteMonitor, "alpha")
        assert (row.submit_failures, row.breaker_until) == (0, None)


class NodeFailure:
    """A scheduler that reports every batch job lost to a node failure."""

    def statuses(self, ids):
        return {i: BatchStatus(FAILED, None, "slurm: NODE_FAIL", NODE_FAIL) for i in ids}


def test_node_failure_resubmits_until_attempts_run_out(env, monkeypatch):
    set_site(env, max_attempts=2)
    never = script(env.root / "apps" / "hang.py", "import time\ntime.sleep(600)\n")
    applications.add_app("hang", "alpha", never)
    (job_id,) = prepared(env, 1, app="hang")
    site.execute("submit", job_id, token="first")
    monkeypatch.setattr(poll, "scheduler_for", lambda _site: NodeFailure())
    resent = []
    monkeypatch.setattr(poll, "send", lambda sig, producer=None: resent.append(sig.args[0]))
    wait_for(lambda: poll.poll_site("alpha").moved, 10, "the node failure to be seen")
    again = subjob(job_id)
    assert (again.state, again.attempt, again.batch_job_id) == ("PREPROCESSED", 2, None)
    assert "NODE_FAIL" in again.state_message and "attempt 2 of 2" in again.state_message
    assert resent == [job_id]
    site.execute("submit", job_id, token="second")
    assert subjob(job_id).batch_job_id == batch_name(job_id, 2)
    wait_for(lambda: poll.poll_site("alpha").moved, 10, "the second node failure")
    final = subjob(job_id)
    assert final.state == "EXECUTION_FINISHED_FAILED"
    assert "no attempts left" in final.state_message
    # To SUBMITTED, back to PREPROCESSED for the second attempt, which fails while running.
    assert subjob_states(job_id) == [
        *SUBJOB_PATH[:4],
        *SUBJOB_PATH[2:6],
        "EXECUTION_FINISHED_FAILED",
    ]
    for attempt in (1, 2):
        site_steps.scheduler_for(site_steps.site_of(final)).cancel(batch_name(job_id, attempt))


def test_application_failure_is_not_resubmitted(env):
    echo_app(env.root, "alpha", exit_code=2)
    (job_id,) = prepared(env, 1)
    site.execute("submit", job_id, token="t")
    assert poll_until_ended(job_id).state == "EXECUTION_FINISHED_FAILED"
    assert subjob(job_id).attempt == 1


def forever_argo(env) -> tuple[int, int]:
    """An Argo job of one subjob at alpha whose application runs until killed (or two minutes
    pass: a failing test leaves no process behind for long), brought up to the subjob's
    submission; the Argo job's id and its subjob's."""
    never = script(
        env.root / "apps" / "forever.py",
        f"""
        import time
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            open({str(env.data / "still-running")!r}, "w").write(str(time.time()))
            time.sleep(0.05)
        """,
    )
    applications.add_app("forever", "alpha", never)
    argo_id = submit_argo(argo_message("c", ("alpha",), "forever"), start=False)
    argo_tasks.stage_in.apply(args=(argo_id,))
    argo_tasks.advance(argo_id)
    (sj,) = argo_tasks.load(argo_id)[1]
    for step in ("stage_in", "preprocess"):
        site.execute(step, sj.id, token="t")
    return argo_id, sj.id


def test_cancel_kills_the_batch_job_and_ends_the_argo_job(env, monkeypatch):
    argo_id, job_id = forever_argo(env)
    site.execute("submit", job_id, token="t")
    wait_for((env.data / "still-running").exists, 20, "the application to start")
    cancels = captured_cancels(monkeypatch)
    assert job_control.cancel_argo(argo_id) == 1
    assert cancels == [job_id]
    site.cancel.apply(args=(job_id,))  # what the site worker does with that message
    spool = env.site_workdir("alpha") / ".local-scheduler"
    pid_file = spool / f"{subjob(job_id).batch_job_id}.pid"
    assert pid_file.exists()
    wait_for(lambda: not alive(pid_file, MARK), 10, "the batch job to stop")
    assert subjob(job_id).state == "KILLED"
    assert argo_tasks.load(argo_id)[0].state == "KILLED"
    poll.poll_site("alpha")
    assert subjob(job_id).state == "KILLED", "the poller leaves a killed job alone"
    with pytest.raises(Exception, match="already ended"):
        job_control.cancel_argo(argo_id)


def assert_stopped(env, name: str) -> None:
    """The local batch job ``name`` was stopped: killed after it started, or kept from
    starting (its pid file taken by the cancel); its process is gone, the application never
    ended by itself (no exit status), and the scheduler reports it no more."""
    spool = env.site_workdir("alpha") / ".local-scheduler"
    pid_file = spool / f"{name}.pid"
    wait_for(pid_file.exists, 10, "the batch job to start or be stopped before it starts")
    wait_for(lambda: not alive(pid_file, MARK), 10, "the batch job to stop")
    assert not (spool / f"{name}.exit").exists()
    plugin = site_steps.scheduler_for(get_settings().site("alpha"))
    assert plugin.statuses([name]) == {}


def test_cancel_of_a_subjob_whose_local_run_has_not_started_keeps_it_from_starting(
    env, monkeypatch
):
    """The scheduler accepted the batch job, the worker died, and the detached run has not
    recorded itself yet: ``find`` does not show it, so the cancel forbids its name, and the
    run, when it comes, runs nothing."""
    argo_id, job_id = forever_argo(env)
    started = []
    monkeypatch.setattr(local, "start_detached", lambda *args: started.append(args))
    site_steps.submit(subjob(job_id), "delivery-1")
    captured_cancels(monkeypatch)
    assert job_control.cancel_argo(argo_id) == 1
    site.cancel.apply(args=(job_id,))
    ((mark, pid_file, exit_file, files),) = started
    late = [str(a) for a in (pid_file, exit_file, *files)]
    subprocess.run(["/bin/sh", "-c", WRAPPER, mark, *late], check=True, timeout=30)
    assert read_int(pid_file) is None and not exit_file.exists()
    assert not (env.data / "still-running").exists(), "the application ran"


def test_the_local_scheduler_cancels_a_job_right_after_submitting_it(env):
    """The detached run writes its pid a moment after the submission returned."""
    _argo_id, job_id = forever_argo(env)
    request = site_steps.batch_request(subjob(job_id))
    plugin = site_steps.scheduler_for(get_settings().site("alpha"))
    script_path = request.workdir / SCRIPT_FILE
    script_path.write_text(plugin.render(request))
    plugin.cancel(plugin.submit(script_path, request))
    assert_stopped(env, request.name)


def test_a_local_run_cancelled_before_it_started_never_starts(env, monkeypatch):
    """On a loaded machine the detached start may come long after the cancel: the cancel
    takes the run's pid file first, and the run, finding it taken, runs nothing."""
    _argo_id, job_id = forever_argo(env)
    request = site_steps.batch_request(subjob(job_id))
    plugin = site_steps.scheduler_for(get_settings().site("alpha"))
    script_path = request.workdir / SCRIPT_FILE
    script_path.write_text(plugin.render(request))
    started = []
    monkeypatch.setattr(local, "start_detached", lambda *args: started.append(args))
    plugin.submit(script_path, request)  # the detached start is not scheduled yet...
    plugin.cancel(request.name)  # ...when the cancel comes: it returns at once
    ((mark, pid_file, exit_file, files),) = started
    # The start, late: the detached wrapper itself, waited for here.
    late = [str(a) for a in (pid_file, exit_file, *files)]
    subprocess.run(["/bin/sh", "-c", WRAPPER, mark, *late], check=True, timeout=30)
    assert read_int(pid_file) is None and not exit_file.exists()
    assert not (env.data / "still-running").exists(), "the application ran"
    assert plugin.statuses([request.name]) == {}


def test_cancel_between_the_schedulers_answer_and_the_commit_cancels_the_batch_job(
    env, monkeypatch, caplog
):
    """The operator's cancel finds no batch job recorded; the submit, finding its subjob
    KILLED when it comes to record the batch job, cancels it."""
    argo_id, job_id = forever_argo(env)
    real_submit = LocalScheduler.submit

    def submit_then_cancel(self, script_path, request):
        batch_id = real_submit(self, script_path, request)
        job_control.cancel_argo(argo_id)
        return batch_id

    monkeypatch.setattr(LocalScheduler, "submit", submit_then_cancel)
    captured_cancels(monkeypatch)  # the site's cancel is another test's; here it never comes
    site.submit.apply(args=(job_id,))
    final = subjob(job_id)
    assert (final.state, final.batch_job_id) == ("KILLED", None)
    assert_stopped(env, batch_name(job_id))
    assert f"cancelled its batch job {batch_name(job_id)}" in caplog.text


def test_cancel_of_a_subjob_being_submitted_cancels_its_batch_job_found_by_name(env, monkeypatch):
    """The scheduler accepted the batch job, then the submit's worker died: nothing recorded
    it, but the subjob holds a submit claim."""
    argo_id, job_id = forever_argo(env)
    site_steps.submit(subjob(job_id), "delivery-1")
    cancels = captured_cancels(monkeypatch)
    assert job_control.cancel_argo(argo_id) == 1
    assert cancels == [job_id]
    site.cancel.apply(args=(job_id,))  # what the site worker does with that message
    assert_stopped(env, batch_name(job_id))


def with_postprocess(env, app: str) -> Path:
    """Give the application at site alpha a postprocess script (it writes ``post.txt``)."""
    post = script(env.root / "apps" / app / "post.sh", "echo post > post.txt\n", python=False)
    with session_scope() as s:
        s.query(Application).filter_by(name=app, site="alpha").update({"postprocess": str(post)})
    return post


def test_a_run_with_nothing_after_it_finishes_in_the_tick_with_no_message(env, monkeypatch):
    """No postprocess script, no children file, no output URL: the tick walks the subjob to
    JOB_FINISHED, every state with its event, and sends nothing."""
    echo_app(env.root, "alpha")
    (job_id,) = prepared(env, 1)
    site.execute("submit", job_id, token="t")
    sent = captured_sends(monkeypatch)
    assert poll_until_ended(job_id).state == "JOB_FINISHED"
    assert sent == []
    assert subjob_states(job_id)[-4:] == [
        "EXECUTION_FINISHED",
        "POSTPROCESSED",
        "STAGED_OUT",
        "JOB_FINISHED",
    ]
    assert subjob(job_id).exit_code == 0


@pytest.mark.parametrize("why", ["children file", "application removed"])
def test_a_children_file_or_an_unregistered_app_keeps_the_postprocess_step(env, monkeypatch, why):
    """What only the postprocess step can do (spawn the children the run left, refuse an
    application taken off the whitelist) is never passed by the tick."""
    echo_app(env.root, "alpha")
    (job_id,) = prepared(env, 1)
    site.execute("submit", job_id, token="t")
    if why == "children file":
        (site_steps.workdir_of(subjob(job_id)) / "children.json").write_text("[]")
    else:
        applications.remove_app("echo", "alpha")
    sent = captured_sends(monkeypatch)
    poll_until_ended(job_id)
    assert sent == [("site.postprocess", "EXECUTION_FINISHED")]


def captured_sends(monkeypatch) -> list[tuple[str, str]]:
    """What the poller sends: (first task, the subjob's state when it was sent)."""
    sent = []

    def send(signature, producer=None):
        first = signature.tasks[0] if isinstance(signature, _chain) else signature
        sent.append((first.task, subjob(first.args[0]).state))

    monkeypatch.setattr(poll, "send", send)
    return sent


def test_the_poller_commits_the_state_before_it_sends_the_resume_chain(env, monkeypatch):
    echo_app(env.root, "alpha")
    with_postprocess(env, "echo")
    (job_id,) = prepared(env, 1)
    site.execute("submit", job_id, token="t")
    sent = captured_sends(monkeypatch)
    poll_until_ended(job_id)
    assert sent == [("site.postprocess", "EXECUTION_FINISHED")]


class EndsDuringThePoll:
    """The batch job ends (writing its exit-code file) while the scheduler is being asked."""

    def __init__(self, workdir):
        self.workdir = workdir

    def statuses(self, ids):
        control = self.workdir / ".edgecelery"
        control.mkdir(parents=True, exist_ok=True)
        (control / "exitcode").write_text("0\n")
        return {i: BatchStatus("EXECUTION_FINISHED", None, "slurm: COMPLETED") for i in ids}


def test_a_job_ending_during_the_status_query_is_judged_by_its_exit_code(env, monkeypatch):
    never = script(env.root / "apps" / "hang2.py", "import time\ntime.sleep(600)\n")
    applications.add_app("hang2", "alpha", never)
    (job_id,) = prepared(env, 1, app="hang2")
    site.execute("submit", job_id, token="t")
    workdir = site_steps.workdir_of(subjob(job_id))
    monkeypatch.setattr(poll, "scheduler_for", lambda _site: EndsDuringThePoll(workdir))
    monkeypatch.setattr(poll, "send", lambda _chain, _producer: None)  # resume nothing
    wait_for(lambda: poll.poll_site("alpha").moved, 10, "the poll to see the end")
    assert (subjob(job_id).state, subjob(job_id).exit_code) == ("JOB_FINISHED", 0)
    site_steps.scheduler_for(site_steps.site_of(subjob(job_id))).cancel(batch_name(job_id))


def test_a_local_submission_killed_before_its_run_started_runs_once_when_sent_again(env):
    """The local scheduler marks a submission, then starts the run: a worker killed between
    the two left a marker and no run. The re-driven submit must start it: found by name, it
    would be followed as QUEUED for ever."""
    echo_app(env.root, "alpha")
    (job_id,) = prepared(env, 1)
    name = batch_name(job_id)
    spool = env.site_workdir("alpha") / ".local-scheduler"
    spool.mkdir(parents=True, exist_ok=True)
    (spool / f"{name}.submitted").write_text("0")
    with session_scope() as s:
        s.get(SubJob, job_id).submit_claim = "a-worker-that-died"
    site.execute("submit", job_id, token="sent-again")
    assert subjob(job_id).batch_job_id == name
    assert poll_until_ended(job_id).state == "JOB_FINISHED"
    workdir = env.site_workdir("alpha") / "jobs" / str(job_id)
    assert (workdir / "runs.log").read_text() == "run\n", "the application ran once"


def test_a_job_being_submitted_is_not_removed_without_force(env):
    """Its batch job may exist already, unrecorded: removing the row would leave it running
    where no cancel can find it by name."""
    echo_app(env.root, "alpha")
    (job_id,) = prepared(env, 1)
    with session_scope() as s:
        s.get(SubJob, job_id).submit_claim = "a-submit-at-work"
    with pytest.raises(InvalidState, match="has a batch job in flight"):
        job_control.remove_subjobs([job_id])
    assert job_control.remove_subjobs([job_id], force=True) == 1
