"""The same code on both databases: SQLite (the embedded default) and PostgreSQL (the
multi-machine one), the latter a private server started by the fixtures (tests/pg.py).

Every test here runs twice through ``any_db_env``; the site steps run directly (no broker) and
the batch jobs are real processes under the local scheduler.
"""

from __future__ import annotations

import json
from datetime import datetime

import pytest
from sqlalchemy import func, select

from edgeceleryapp import applications, job_views
from edgeceleryapp.db import engine, session_scope
from edgeceleryapp.errors import ValidationFailed
from edgeceleryapp.models import JobEvent, SubJob, utcnow
from edgeceleryapp.settings import reset_settings
from edgeceleryapp.state_store import move_subjob
from edgeceleryapp.status_outbox import write_pending_marks
from tasks import site
from tasks.site_steps import workdir_of
from tests.helpers import (
    JOHNDOE,
    SUBJOB_PATH,
    argo_message,
    at_once,
    balsam_message,
    echo_app,
    poll_until_ended,
    run_to_end,
    script,
    step_at_once,
    subjob,
    subjob_states,
    submit_config_job,
)
from workflows.intake import submit_argo, submit_balsam


def test_the_configured_database_is_the_one_in_use(any_db_env):
    assert engine().dialect.name == any_db_env.backend
    with session_scope() as s:
        assert s.scalar(select(func.count()).select_from(SubJob)) == 0, "a fresh database"


def test_balsam_job_runs_through_every_site_step_to_job_finished(any_db_env):
    env = any_db_env
    echo_app(env.root, "alpha")
    before = utcnow()
    job_id = submit_config_job(env)
    final = run_to_end(job_id)
    assert final.state == "JOB_FINISHED", final.state_message
    assert final.exit_code == 0
    assert final.batch_job_id
    assert final.command is not None and final.command[-2:] == ["--events", "100"]
    assert subjob_states(job_id) == SUBJOB_PATH
    write_pending_marks()  # the last change's mark waits for a transaction or the timer
    with session_scope() as s:
        events = list(
            s.scalars(select(JobEvent).where(JobEvent.subjob_id == job_id).order_by(JobEvent.id))
        )
    assert [(e.from_state, e.to_state) for e in events] == list(
        zip(["", *SUBJOB_PATH[:-1]], SUBJOB_PATH, strict=True)
    )
    assert all(e.published for e in events), "every change went out as a status message"
    # Timestamps come back as the naive UTC values that were written, in order.
    assert final.submitted_at is not None and final.created_at is not None
    assert final.created_at.tzinfo is None and final.submitted_at.tzinfo is None
    assert before <= final.created_at <= final.submitted_at <= final.updated_at <= utcnow()
    assert [e.time for e in events] == sorted(e.time for e in events)
    out = env.data / "out"
    assert json.loads((out / "args.json").read_text()) == ["--events", "100"]
    assert (out / "result.txt").read_text() == "ok\n"
    shown = job_views.show_subjob(job_id)
    assert shown["state"] == "JOB_FINISHED"
    assert shown["command"] == final.command
    assert [e["to_state"] for e in shown["events"]] == SUBJOB_PATH


def test_concurrent_submissions_of_one_subjob_submit_once(any_db_env):
    env = any_db_env
    echo_app(env.root, "alpha")
    job_id = submit_balsam(balsam_message(), start=False)
    site.stage_in.apply(args=(job_id,))
    site.preprocess.apply(args=(job_id,))
    workers = 6
    outcomes = step_at_once("submit", job_id, workers, tokens=True)
    assert len(outcomes) == workers, "no thread died of an unexpected error"
    assert outcomes.count("ok") >= 1
    assert subjob(job_id).state == "SUBMITTED"
    spool = env.site_workdir("alpha") / ".local-scheduler"
    assert len(list(spool.glob("*.submitted"))) == 1, "one batch submission"
    assert subjob_states(job_id).count("SUBMITTED") == 1
    site.execute("submit", job_id, token="late")  # a retry finds the step done
    assert len(list(spool.glob("*.submitted"))) == 1
    assert poll_until_ended(job_id).state == "JOB_FINISHED"


def test_compare_and_set_race_has_exactly_one_winner(any_db_env):
    job_id = submit_balsam(balsam_message(), start=False)
    assert job_id == 1, "each test starts from an empty database"
    racers = 8
    results: list[bool] = []
    errors: list[BaseException] = []

    def race(_i: int) -> None:
        try:
            results.append(move_subjob(job_id, "CREATED", ["STAGED_IN"], "raced"))
        except BaseException as exc:
            errors.append(exc)

    at_once(racers, race)
    assert errors == []
    assert sorted(results) == [False] * (racers - 1) + [True]
    with session_scope() as s:
        moves = s.scalar(
            select(func.count())
            .select_from(JobEvent)
            .where(
                JobEvent.subjob_id == job_id,
                JobEvent.from_state == "CREATED",
                JobEvent.to_state == "STAGED_IN",
            )
        )
    assert moves == 1
    assert subjob(job_id).state == "STAGED_IN"
    assert subjob(job_id).state_message == "raced"


@pytest.fixture
def any_db_env(any_db_env, monkeypatch):
    """The deployment with /data, which alpgen_message's URLs name, among the Argo service's
    transfer roots."""
    roots = json.dumps([str(any_db_env.data), "/data"])
    monkeypatch.setenv("EDGECELERY_ARGO__TRANSFER_ROOTS", roots)
    reset_settings()
    return any_db_env


def alpgen_message(group: str, **fields: object) -> dict:
    """An Argo job like seed 000 Table 3 in ``group``: a subjob at alpha, then one at beta."""
    return argo_message(
        **{
            "name": "alpGenGeneration",
            "user_id": f"{group}.job001",
            "group_identifier": group,
            **JOHNDOE,
            "input_url": "local:///data/in",
            "output_url": "local:///data/out",
            "job_status_routing_key": "atlas_job_monitor",
            "subjobs": [
                {"name": "warmup", "site": "alpha", "application": "echo", "num_nodes": 2},
                {"name": "generate", "site": "beta", "application": "echo", "config_file": "a.ini"},
            ],
            **fields,
        }
    )


def named_all(value: str) -> dict:
    """An Argo job whose every name and identifier is ``value``."""
    return alpgen_message(
        value,
        name=value,
        user_id=value,
        username=value,
        subjobs=[{"name": value, "site": "alpha", "application": "echo"}],
    )


def _time(text: str) -> datetime:
    assert text.endswith("Z"), text
    return datetime.fromisoformat(text[:-1])


def test_argo_job_is_stored_and_read_back(any_db_env):
    before = utcnow()
    group = "alpGen.wjet.enu.5jets.13TeV.prodset001"
    first = submit_argo(alpgen_message(group), start=False)
    other = submit_argo(alpgen_message("another.group"), start=False)
    second = submit_argo(alpgen_message(group, name="second"), start=False)
    assert len({first, other, second}) == 3

    shown = job_views.show_argo(first)
    assert shown["id"] == first
    assert shown["state"] == "CREATED"
    assert shown["name"] == "alpGenGeneration"
    assert shown["group_identifier"] == group
    assert shown["email"] == "johndoe@doe.gov"
    assert shown["job_status_routing_key"] == "atlas_job_monitor"
    assert shown["num_subjobs"] == 2 and shown["current_subjob"] == 0
    assert before <= _time(shown["created_at"]) <= utcnow()
    subjobs = shown["subjobs"]
    assert [(sj["position"], sj["name"], sj["site"]) for sj in subjobs] == [
        (0, "warmup", "alpha"),
        (1, "generate", "beta"),
    ]
    assert all(sj["argo_job_id"] == first and sj["state"] == "CREATED" for sj in subjobs)
    assert subjobs[0]["num_nodes"] == 2 and subjobs[1]["config_file"] == "a.ini"
    # The data flows from one subjob to the next through the staging area.
    assert subjobs[0]["output_url"] == subjobs[1]["input_url"]
    assert subjobs[0]["input_url"].endswith(f"/{first}/input")
    assert subjobs[1]["output_url"].endswith(f"/{first}/output")
    events = shown["events"]
    assert [(e["subjob_id"], e["from_state"], e["to_state"]) for e in events] == [
        (None, "", "CREATED"),
        (subjobs[0]["id"], "", "CREATED"),
        (subjobs[1]["id"], "", "CREATED"),
    ]
    assert all(before <= _time(e["time"]) <= utcnow() for e in events)

    listed = job_views.list_argo(group=group)
    assert [(j["id"], j["name"], j["site"]) for j in listed] == [
        (second, "second", "alpha"),
        (first, "alpGenGeneration", "alpha"),
    ]
    assert [j["id"] for j in job_views.list_argo(group="another.group")] == [other]
    assert job_views.list_argo(group="no.such.group") == []
    assert [j["id"] for j in job_views.list_argo(group=group, site="beta", limit=1)] == [second]
    assert [j["id"] for j in job_views.list_argo(state="CREATED")] == [second, other, first]


def test_names_are_stored_up_to_the_column_width_and_refused_beyond(any_db_env):
    """Names and identifiers live in 256-character columns, which PostgreSQL enforces:
    validation admits exactly what they hold and reports the rest as field errors."""
    long = "n" * 256
    argo_id = submit_argo(named_all(long), start=False)
    shown = job_views.show_argo(argo_id)
    assert shown["name"] == shown["user_id"] == shown["username"] == long
    assert shown["group_identifier"] == long
    assert shown["subjobs"][0]["name"] == long
    assert [j["id"] for j in job_views.list_argo(group=long)] == [argo_id]
    job_id = submit_balsam(balsam_message(name=long), start=False)
    assert subjob(job_id).name == long

    too_long = long + "n"
    with pytest.raises(ValidationFailed) as refused:
        submit_argo(named_all(too_long), start=False)
    fields = {field for field, _ in refused.value.errors}
    assert fields == {"name", "user_id", "username", "group_identifier", "subjobs[0].name"}
    with pytest.raises(ValidationFailed):
        submit_balsam(balsam_message(name=too_long), start=False)
    assert [j["id"] for j in job_views.list_argo()] == [argo_id], "nothing more was stored"


def test_failure_output_with_a_nul_byte_still_fails_the_step(any_db_env):
    """A failing config_script's output is the failure reason; PostgreSQL text cannot hold
    NUL, and the step must still reach its failure state instead of erroring forever."""
    env = any_db_env
    bin_dir = env.root / "apps" / "nul"
    exe = script(bin_dir / "app.py", "print('never runs')\n")
    cfg = script(
        bin_dir / "config.py",
        """
        import sys
        sys.stderr.write("bad\\x00config")
        sys.exit(2)
        """,
    )
    applications.add_app("nul", "alpha", exe, config_script=cfg)
    job_id = submit_balsam(balsam_message(app="nul"), start=False)
    site.stage_in.apply(args=(job_id,))
    site.preprocess.apply(args=(job_id,))
    failed = subjob(job_id)
    assert failed.state == "PREPROCESSED_FAILED"
    assert "config_script exited with code 2" in failed.state_message
    assert "bad" in failed.state_message and "config" in failed.state_message
    assert "\x00" not in failed.state_message
    assert not (workdir_of(failed) / "runs.log").exists()
