"""The site steps run directly (no broker): whitelist, injection, idempotence, exactly-once
submission, failure states. The batch jobs are real processes under the local scheduler."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import update

from backends.batchscript import read_exit_code
from backends.schedulers.local import LocalScheduler
from edgeceleryapp import job_control
from edgeceleryapp.db import session_scope
from edgeceleryapp.errors import TransientError, ValidationFailed
from edgeceleryapp.models import JobEvent, SubJob
from tasks import site, site_steps
from tasks.retry_policy import Stop
from tasks.site_steps import workdir_of
from tests.helpers import (
    SUBJOB_PATH,
    balsam_message,
    count,
    echo_app,
    input_dir,
    poll_until_ended,
    run_to_end,
    run_to_submitted,
    step_at_once,
    subjob,
    subjob_states,
    submit_config_job,
)
from workflows.intake import submit_balsam


def test_balsam_job_runs_through_every_state_and_stages_output(env):
    echo_app(env.root, "alpha")
    job_id = submit_config_job(env)
    final = run_to_end(job_id)
    assert final.state == "JOB_FINISHED"
    assert subjob_states(job_id) == SUBJOB_PATH
    out = env.data / "out"
    assert json.loads((out / "args.json").read_text()) == ["--events", "100"]
    assert (out / "result.txt").read_text() == "ok\n"
    assert not (out / ".edgecelery").exists(), "control files stay at the site"


def test_unregistered_application_is_refused_and_nothing_runs(env):
    echo_app(env.root, "beta")  # registered at beta, not at alpha
    job_id = submit_balsam(balsam_message(site="alpha"), start=False)
    site.stage_in.apply(args=(job_id,))
    refused = subjob(job_id)
    assert refused.state == "STAGED_IN_FAILED"
    assert "not registered at site 'alpha'" in refused.state_message
    assert not workdir_of(refused).exists(), "nothing was staged or executed"
    # The chain is stopped: the next steps do nothing.
    site.preprocess.apply(args=(job_id,))
    site.submit.apply(args=(job_id,))
    assert subjob(job_id).state == "STAGED_IN_FAILED"
    assert not (env.site_workdir("alpha") / ".local-scheduler").exists()


HOSTILE = [
    "; touch {canary}",
    "$(touch {canary})",
    "`touch {canary}`",
    "a\nb && touch {canary}",
    "' ; touch {canary} ; '",
    '"$(touch {canary})"',
]


@pytest.mark.parametrize("config_name", ["c;touch CANARY", "c$(touch CANARY)", "c`touch CANARY`"])
def test_hostile_config_text_is_never_evaluated(env, config_name):
    canary = env.root / "CANARY"
    lines = [h.format(canary=canary) for h in HOSTILE]
    echo_app(env.root, "alpha")
    job_id = submit_balsam(
        balsam_message(
            config_file=config_name,
            input_url=input_dir(env, {config_name: "\n".join(lines)}),
        ),
        start=False,
    )
    final = run_to_end(job_id)
    assert final.state == "JOB_FINISHED", final.state_message
    workdir = workdir_of(final)
    # Each line arrived as one literal argument; nothing was run by a shell.
    assert json.loads((workdir / "args.json").read_text()) == "\n".join(lines).splitlines()
    assert not canary.exists()
    assert not list(env.root.rglob("CANARY")), "no file named by the injected text exists"


def staged_beside_a_secret(env, config_file: str) -> tuple[int, Path]:
    """A job of the echo app at alpha naming ``config_file``, staged in; and a file with
    secret arguments outside its work directory."""
    secret = env.data / "secret.ini"
    secret.write_text("--leak\n")
    echo_app(env.root, "alpha")
    job_id = submit_balsam(balsam_message(config_file=config_file), start=False)
    site.stage_in.apply(args=(job_id,))
    return job_id, secret


def test_config_file_escaping_the_work_directory_is_refused(env):
    job_id, _secret = staged_beside_a_secret(env, "app.ini")
    # Past validation (which refuses '..'), a path could still be tampered with in the DB.
    with session_scope() as s:
        s.execute(update(SubJob).where(SubJob.id == job_id).values(config_file="../../x.ini"))
    site.preprocess.apply(args=(job_id,))
    assert subjob(job_id).state == "PREPROCESSED_FAILED"
    assert "leaves the job's work directory" in subjob(job_id).state_message


def test_config_file_symlink_out_of_the_work_directory_is_refused(env):
    job_id, secret = staged_beside_a_secret(env, "link.ini")
    (workdir_of(subjob(job_id)) / "link.ini").symlink_to(secret)
    site.preprocess.apply(args=(job_id,))
    assert subjob(job_id).state == "PREPROCESSED_FAILED"
    assert subjob(job_id).command is None


def test_each_step_run_twice_in_a_row_has_one_effect(env):
    echo_app(env.root, "alpha")
    job_id = submit_balsam(balsam_message(output_url=f"local://{env.data / 'out'}"), start=False)
    for step in ("stage_in", "preprocess", "submit"):
        getattr(site, step).apply(args=(job_id,))
        getattr(site, step).apply(args=(job_id,))
    poll_until_ended(job_id)
    for step in ("postprocess", "stage_out"):
        getattr(site, step).apply(args=(job_id,))
        getattr(site, step).apply(args=(job_id,))
    assert subjob_states(job_id) == SUBJOB_PATH, "no state twice, none backwards"
    workdir = workdir_of(subjob(job_id))
    assert (workdir / "runs.log").read_text() == "run\n", "the application ran once"
    spool = env.site_workdir("alpha") / ".local-scheduler"
    assert len(list(spool.glob("*.submitted"))) == 1, "one batch submission"


def test_concurrent_submissions_of_one_subjob_submit_once(env):
    echo_app(env.root, "alpha")
    job_id = submit_balsam(balsam_message(), start=False)
    site.stage_in.apply(args=(job_id,))
    site.preprocess.apply(args=(job_id,))
    outcomes = step_at_once("submit", job_id, 4, tokens=True)
    assert subjob(job_id).state == "SUBMITTED"
    assert outcomes.count("ok") >= 1
    spool = env.site_workdir("alpha") / ".local-scheduler"
    assert len(list(spool.glob("*.submitted"))) == 1
    assert subjob_states(job_id).count("SUBMITTED") == 1
    # The ones that were told 'busy' find the step done when their retry comes.
    site.execute("submit", job_id, token="late")
    assert len(list(spool.glob("*.submitted"))) == 1


def test_concurrent_stage_in_records_one_transition(env):
    echo_app(env.root, "alpha")
    job_id = submit_balsam(
        balsam_message(input_url=input_dir(env, {"a.txt": "x" * 100_000})), start=False
    )
    # A duplicate that finds the file being written is told 'busy': it retries later.
    outcomes = step_at_once("stage_in", job_id, 3)
    assert "ok" in outcomes
    site.execute("stage_in", job_id)  # a retry of a 'busy' one finds the step done
    assert subjob_states(job_id) == ["CREATED", "STAGED_IN"]
    assert (workdir_of(subjob(job_id)) / "a.txt").stat().st_size == 100_000
    assert not list(workdir_of(subjob(job_id)).glob(".*.part-*")), "no temporary file left"


def test_submit_rerun_after_crash_before_commit_finds_the_batch_job(env):
    """The worker died after the scheduler accepted the job but before the DB commit."""
    echo_app(env.root, "alpha")
    job_id = submit_balsam(balsam_message(), start=False)
    site.stage_in.apply(args=(job_id,))
    site.preprocess.apply(args=(job_id,))
    token = "delivery-1"
    site_steps.submit(subjob(job_id), token)  # the scheduler accepted; nothing recorded
    assert subjob(job_id).state == "PREPROCESSED"
    site.execute("submit", job_id, token=token)  # the same message, delivered again
    assert subjob(job_id).state == "SUBMITTED"
    final = poll_until_ended(job_id)
    assert final.state == "JOB_FINISHED"
    assert (workdir_of(final) / "runs.log").read_text() == "run\n"
    spool = env.site_workdir("alpha") / ".local-scheduler"
    assert len(list(spool.glob("*.submitted"))) == 1


def test_failing_application_fails_the_subjob_with_the_exit_code(env):
    echo_app(env.root, "alpha", exit_code=3)
    job_id = submit_balsam(balsam_message(), start=False)
    run_to_submitted(job_id)
    final = poll_until_ended(job_id)
    assert final.state == "EXECUTION_FINISHED_FAILED"
    assert final.exit_code == 3
    assert "exited with code 3" in final.state_message
    site.postprocess.apply(args=(job_id,))
    assert subjob(job_id).state == "EXECUTION_FINISHED_FAILED", "the chain stopped"


def test_a_new_attempt_never_reads_the_exit_code_an_earlier_one_left(env, monkeypatch):
    """A retried subjob runs in the same work directory: the earlier attempt's exit code must
    be gone before the new batch job is submitted, or the poller ends the new attempt with
    it before it ran."""
    echo_app(env.root, "alpha", exit_code=3)
    job_id = submit_balsam(balsam_message(), start=False)
    run_to_submitted(job_id)
    poll_until_ended(job_id)
    assert read_exit_code(workdir_of(subjob(job_id))) == 3
    job_control.retry_subjob(job_id)
    assert subjob(job_id).state == "PREPROCESSED" and subjob(job_id).attempt == 2
    seen: list[int | None] = []

    def submit(self, script, job):
        seen.append(read_exit_code(job.workdir))
        return job.name

    monkeypatch.setattr(LocalScheduler, "submit", submit)
    site.submit.apply(args=(job_id,))
    assert seen == [None]
    assert subjob(job_id).state == "SUBMITTED"


def test_missing_input_is_a_permanent_failure_with_the_path(env):
    echo_app(env.root, "alpha")
    missing = env.data / "nope"
    job_id = submit_balsam(balsam_message(input_url=f"local://{missing}"), start=False)
    site.stage_in.apply(args=(job_id,))
    failed = subjob(job_id)
    assert failed.state == "STAGED_IN_FAILED"
    assert str(missing) in failed.state_message


def test_input_outside_the_allowed_roots_is_refused_at_intake_and_at_stage_in(env):
    echo_app(env.root, "alpha")
    with pytest.raises(ValidationFailed, match="input_url: local:///etc: is outside the dir"):
        submit_balsam(balsam_message(input_url="local:///etc"), start=False)
    job_id = submit_balsam(balsam_message(input_url=f"local://{env.data}"), start=False)
    with session_scope() as s:  # a record written before the check, or by hand
        s.get(SubJob, job_id).input_url = "local:///etc"
    site.stage_in.apply(args=(job_id,))
    assert subjob(job_id).state == "STAGED_IN_FAILED"
    assert "input_url: local:///etc: is outside the directories" in subjob(job_id).state_message


def test_unknown_url_scheme_names_the_scheme(env):
    echo_app(env.root, "alpha")
    job_id = submit_balsam(balsam_message(input_url="gopher://host/x"), start=False)
    site.stage_in.apply(args=(job_id,))
    assert "no transfer plug-in for scheme 'gopher'" in subjob(job_id).state_message


def test_transient_errors_are_retried_then_fail_with_the_reason(env, monkeypatch):
    echo_app(env.root, "alpha")
    job_id = submit_balsam(balsam_message(), start=False)
    calls = []

    def flaky(_subjob):
        calls.append(1)
        raise TransientError("transfer server busy")

    monkeypatch.setitem(site.WORK, "stage_in", flaky)
    site.stage_in.apply(args=(job_id,))
    failed = subjob(job_id)
    assert failed.state == "STAGED_IN_FAILED"
    assert "gave up after 2 retries: transfer server busy" in failed.state_message
    assert len(calls) == 3  # the first try and max_retries = 2 retries


def test_job_event_rows_match_the_state_changes(env):
    echo_app(env.root, "alpha")
    job_id = submit_balsam(balsam_message(), start=False)
    run_to_end(job_id)
    with session_scope() as s:
        events = s.query(JobEvent).filter(JobEvent.subjob_id == job_id).order_by(JobEvent.id)
        pairs = [(e.from_state, e.to_state) for e in events]
    assert pairs == list(zip(["", *SUBJOB_PATH[:-1]], SUBJOB_PATH, strict=True))
    assert count(JobEvent) == len(SUBJOB_PATH)


def test_work_directory_is_per_subjob(env):
    echo_app(env.root, "alpha")
    a = submit_balsam(balsam_message(), start=False)
    b = submit_balsam(balsam_message(), start=False)
    assert workdir_of(subjob(a)) != workdir_of(subjob(b))
    assert isinstance(workdir_of(subjob(a)), Path)


@pytest.mark.parametrize("ending", ["killed", "deleted"])
def test_a_claim_on_a_subjob_killed_or_deleted_meanwhile_submits_nothing(env, monkeypatch, ending):
    """The submit read its subjob PREPROCESSED; before it claims, an operator ended it."""
    echo_app(env.root, "alpha")
    job_id = submit_balsam(balsam_message(), start=False)
    site.stage_in.apply(args=(job_id,))
    site.preprocess.apply(args=(job_id,))
    stale = subjob(job_id)
    if ending == "killed":
        assert job_control.kill_subjob(job_id) == 0, "nothing submitted, nothing to cancel"
    else:
        job_control.remove_subjobs([job_id])
    events = subjob_states(job_id)
    monkeypatch.setattr(site, "load_subjob", lambda _id: stale)  # what the step read first
    retries = []
    monkeypatch.setattr(site.submit, "retry", lambda *a, **k: retries.append(k))
    site.submit.apply(args=(job_id,))
    spool = env.site_workdir("alpha") / ".local-scheduler"
    assert not list(spool.glob("*.submitted")), "no batch job"
    assert retries == [], "no retry spent"
    assert subjob_states(job_id) == events, "no failure recorded"
    with pytest.raises(Stop):
        site_steps.submit(stale, "another-delivery")
    assert not list(spool.glob("*.submitted"))
