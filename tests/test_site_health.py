"""Site health and why a job waits (issue 13, Build 1 and 2): the retry and admission notes on
the record, its timeline and status messages; "no worker has taken queue site.alpha"; the
heartbeat, status query and last error each site records; ``edgecelery site ls``/``site
show``, ``argo show``, ``job show`` and ``argo show --follow`` through the real command.
Three of them run on PostgreSQL too (``any_db_env``)."""

from __future__ import annotations

import json
import threading
import time
from datetime import timedelta
from typing import Any

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import select, update

from edgeceleryapp import job_control, job_views, site_monitor
from edgeceleryapp.cli import main
from edgeceleryapp.cli.watch import follow
from edgeceleryapp.db import read_scope, session_scope
from edgeceleryapp.devstack import free_port
from edgeceleryapp.errors import Parked, TransientError
from edgeceleryapp.models import JobEvent, SiteMonitor, SubJob, utcnow
from edgeceleryapp.settings import reset_settings
from edgeceleryapp.state_store import move_argo, move_subjob
from tasks import poll, site, site_steps
from tests.helpers import argo_message, balsam_message, echo_app, subjob
from tests.test_policies import prepared, set_site
from workflows.intake import submit_argo, submit_balsam


def run(*args: str) -> Result:
    return CliRunner().invoke(main, list(args))


def ok(result: Result) -> Result:
    assert result.exit_code == 0, (result.output, result.exception)
    return result


def same_state_notes(subjob_id: int) -> list[str]:
    """The timeline's entries that kept the state and said why."""
    with read_scope() as s:
        rows = s.scalars(
            select(JobEvent)
            .where(JobEvent.subjob_id == subjob_id, JobEvent.from_state == JobEvent.to_state)
            .order_by(JobEvent.id)
        )
        return [e.message for e in rows]


def age(subjob_id: int, seconds: float) -> None:
    """Make the record look as if its message was sent ``seconds`` ago."""
    then = utcnow() - timedelta(seconds=seconds)
    with session_scope() as s:
        s.execute(
            update(SubJob)
            .where(SubJob.id == subjob_id)
            .values(updated_at=then, dispatched_at=None, lease_owner=None, lease_until=None)
        )


# --- why it waits -------------------------------------------------------------------------


def test_a_retried_step_says_why_on_the_record_the_timeline_and_the_site(any_db_env, monkeypatch):
    env = any_db_env
    echo_app(env.root, "alpha")
    job = submit_balsam(balsam_message(), start=False)
    seen_while_waiting: list[str] = []

    def refused(_subjob: Any) -> dict:
        seen_while_waiting.append(subjob(job).state_message)
        raise TransientError("connection refused")

    monkeypatch.setitem(site.WORK, "stage_in", refused)
    site.stage_in.apply(args=(job,))  # eager: its retries run at once, then it gives up

    # Before each retry an operator reading the record saw why it waited.
    assert seen_while_waiting[0] == ""
    for retry, message in enumerate(seen_while_waiting[1:], start=1):
        assert message.startswith("retrying stage-in in ")
        assert message.endswith(f" s (attempt {retry} of 2): connection refused")
    notes = same_state_notes(job)
    assert len(notes) == 2 and notes == seen_while_waiting[1:]
    assert subjob(job).state == "STAGED_IN_FAILED"
    with read_scope() as s:
        last = s.get(SiteMonitor, "alpha")
        assert last is not None
        assert last.last_error == (
            f"subjob {job}: stage_in failed: gave up after 2 retries: connection refused"
        )


def test_a_retry_note_is_shown_while_the_retry_is_due(env):
    echo_app(env.root, "alpha")
    job = submit_balsam(balsam_message(), start=False)
    note = "retrying stage-in in 40 s (attempt 3 of 8): connection refused"
    site.retrying("stage_in", job, 40, note)
    shown = job_views.show_subjob(job)
    assert shown["state_message"] == note
    assert shown["waiting"]["why"] == note
    out = ok(run("job", "show", str(job))).stdout
    assert f"waiting              {note}" in out
    # The same note twice is one timeline entry, not two.
    site.retrying("stage_in", job, 40, note)
    assert same_state_notes(job) == [note]


def test_an_admission_wait_says_the_queue_and_the_place(any_db_env):
    env = any_db_env
    set_site(env, max_queued=1)
    echo_app(env.root, "alpha")
    first, second, third = prepared(env, 3)
    site.execute("submit", first, token="a")
    for job in (second, third):
        with pytest.raises(Parked):
            site.execute("submit", job, token=f"t{job}")
    assert (
        subjob(third).state_message == "waiting for admission at alpha: 1 queued (limit 1), 1 ahead"
    )
    assert same_state_notes(third) == [subjob(third).state_message]
    # Shown as it is now: once the second is gone, the third is next.
    job_control.kill_subjob(second)
    why = job_views.show_subjob(third)["waiting"]["why"]
    assert why == "waiting for admission at alpha: 1 queued (limit 1), 0 ahead"


def test_a_site_without_a_worker_is_named_with_its_queue(env):
    echo_app(env.root, "alpha")
    job = submit_balsam(balsam_message())  # site.stage_in sent; no worker runs
    age(job, 5 * 60 + 5)
    why = job_views.show_subjob(job)["waiting"]["why"]
    assert why == (
        "no worker has taken queue site.alpha for 5 min; no worker of site alpha has been seen"
    )
    site_monitor.heartbeat("alpha")  # a worker's clock ticks: the wait is the step's own
    assert job_views.show_subjob(job)["waiting"]["why"].startswith("stage-in sent; sent again at")
    with session_scope() as s:
        s.execute(update(SiteMonitor).values(worker_seen_at=utcnow() - timedelta(minutes=3)))
    assert job_views.show_subjob(job)["waiting"]["why"] == (
        "no worker has taken queue site.alpha for 5 min; its last worker was seen 3 min ago"
    )


def test_argo_show_says_why_its_current_subjob_waits(env):
    argo_id = submit_argo(argo_message())
    assert move_argo(argo_id, "CREATED", ["STAGED_IN", "SUBJOB_SUBMITTED"], current_subjob=0)
    first = job_views.show_argo(argo_id)["subjobs"][0]["id"]
    age(first, 120)
    out = ok(run("argo", "show", str(argo_id))).stdout
    said = f"subjob {first}: no worker has taken queue site.alpha for 2 min"
    assert f"waiting                  {said}" in out
    assert "      waiting: no worker has taken queue site.alpha for 2 min" in out
    assert job_views.show_argo(argo_id)["waiting"]["why"].startswith(said)


def test_follow_prints_why_the_job_waits(env, capsys):
    argo_id = submit_argo(argo_message())
    assert move_argo(argo_id, "CREATED", ["STAGED_IN", "SUBJOB_SUBMITTED"], current_subjob=0)
    stopped: list[str] = []
    watcher = threading.Thread(target=lambda: stopped.append(follow(argo_id)), daemon=True)
    watcher.start()
    deadline = time.monotonic() + 20
    printed = ""
    while "waiting: subjob" not in printed and time.monotonic() < deadline:
        printed += capsys.readouterr().out
        time.sleep(0.05)
    assert f"argo {argo_id}" in printed
    assert "waiting: subjob" in printed and "no worker has taken queue site.alpha yet" in printed
    job_control.cancel_argo(argo_id)
    watcher.join(20)
    assert stopped == ["KILLED"]


# --- what each site records ---------------------------------------------------------------


class _Unanswering:
    """A scheduler whose status command times out."""

    def statuses(self, batch_ids: list[str]) -> dict:
        raise TransientError("qstat: connection to the server timed out")


def test_a_tick_records_the_heartbeat_and_a_failed_status_query(env, monkeypatch):
    echo_app(env.root, "alpha")
    job = submit_balsam(balsam_message(), start=False)
    move_subjob(job, "CREATED", ["STAGED_IN", "PREPROCESSED", "SUBMITTED"], batch_job_id="777")
    site_steps.workdir_of(subjob(job)).mkdir(parents=True, exist_ok=True)
    monkeypatch.setattr(poll, "scheduler_for", lambda _site: _Unanswering())
    before = utcnow()
    poll.poll_site("alpha")
    health = json.loads(ok(run("site", "show", "alpha", "--json")).stdout)
    assert health["worker"]["alive"] is True
    assert health["worker"]["seen_by"] == site_monitor.worker_name()
    query = health["last_status_query"]
    assert query["error"] == "qstat: connection to the server timed out"
    assert query["at"] >= before.isoformat(timespec="seconds") and query["seconds"] >= 0
    assert health["jobs"] == {"SUBMITTED": 1}
    assert health["admission"]["queued"] == 1


def test_site_ls_and_show_through_the_command(any_db_env):
    env = any_db_env
    set_site(env, max_queued=3)
    site_monitor.heartbeat("alpha")
    job = submit_balsam(balsam_message(), start=False)
    site_monitor.step_error(job, f"subjob {job}: stage_in failed: no such file")
    sites = json.loads(ok(run("site", "ls", "--json")).stdout)
    assert [h["site"] for h in sites] == ["alpha", "beta"]
    alpha, beta = sites
    assert (alpha["worker"]["alive"], beta["worker"]["alive"]) == (True, False)
    assert alpha["admission"] == {
        "limit": 3,
        "queued": 0,
        "running": 0,
        "waiting_for_admission": 0,
    }
    assert alpha["last_error"]["message"] == f"subjob {job}: stage_in failed: no such file"
    assert alpha["breaker"] == "closed" and alpha["jobs"] == {"CREATED": 1}
    table = ok(run("site", "ls")).stdout
    assert table.splitlines()[0].split() == [
        "SITE", "WORKER", "MESSAGES", "JOBS", "ADMISSION", "BREAKER"
    ]  # fmt: skip
    assert "none seen" in table
    shown = ok(run("site", "show", "alpha")).stdout
    assert "0 queued (limit 3), 0 running, 0 waiting for admission" in shown
    assert f"subjob {job}: stage_in failed: no such file" in shown
    refused = run("site", "show", "gamma")
    assert refused.exit_code == 1
    assert "no site 'gamma' in the settings (sites: alpha, beta)" in refused.stderr


def test_an_unreachable_broker_leaves_the_queue_depth_unknown(env, monkeypatch):
    monkeypatch.setenv("EDGECELERY_BROKER_URL", f"redis://127.0.0.1:{free_port()}/0")
    reset_settings()
    shown = ok(run("site", "show", "alpha")).stdout
    assert "messages waiting     unknown (broker unreachable)" in shown
    assert json.loads(ok(run("site", "show", "alpha", "--json")).stdout)["messages_waiting"] is None
