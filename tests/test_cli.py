"""The ``edgecelery`` command (HUST'17 balsam_* and Argo commands), driven in
process with click's CliRunner against the test deployment (sites alpha and beta).

Exit codes: 0 success, 1 operation refused (not found, wrong state), 2 invalid input.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from edgeceleryapp.cli import main
from edgeceleryapp.state_store import move_argo
from tests.helpers import argo_message, balsam_message


@pytest.fixture
def cli(env):
    """Run ``edgecelery ARGS...``; stdout and stderr are kept apart (click >= 8.2)."""
    runner = CliRunner()

    def run(*args: str, input: str | None = None) -> Result:
        return runner.invoke(main, list(args), input=input)

    return run


def ok(result: Result) -> Result:
    assert result.exit_code == 0, (result.output, result.exception)
    return result


def write(path: Path, data: Any) -> str:
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return str(path)


# What the Balsam jobs added here ask for, beyond balsam_message's defaults.
SINGLE = {"name": "single", "queue": "prod", "num_nodes": 2}


def submit(cli, tmp_path: Path, message: dict) -> int:
    result = ok(cli("argo", "submit", write(tmp_path / "argo.json", message), "--no-start", "-q"))
    return int(result.stdout.strip())


def add_job(cli, tmp_path: Path, **fields: Any) -> int:
    path = write(tmp_path / "job.json", balsam_message(**{**SINGLE, **fields}))
    return int(ok(cli("job", "add", path, "--no-start", "-q")).stdout.strip())


# --- help -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        pytest.param([], id="top"),
        pytest.param(["argo"], id="argo"),
        pytest.param(["argo", "validate"], id="argo-validate"),
        pytest.param(["argo", "ls"], id="argo-ls"),
        pytest.param(["job", "alter"], id="job-alter"),
        pytest.param(["app", "add"], id="app-add"),
        pytest.param(["retry"], id="retry"),
    ],
)
def test_dash_h_prints_help(cli, args):
    result = ok(cli(*args, "-h"))
    assert result.stdout.startswith("Usage:")
    assert "-h, --help" in result.stdout


def test_top_level_help_lists_the_command_groups(cli):
    out = ok(cli("-h")).stdout
    for command in ("app", "argo", "job", "retry", "worker", "db"):
        assert f"\n  {command} " in out


# --- argo validate --------------------------------------------------------------------------


def register_echo(cli, *sites: str) -> None:
    for site in sites:
        ok(cli("app", "add", "echo", "--site", site, "--executable", "/bin/echo"))


def test_validate_accepts_a_valid_message(cli, tmp_path):
    register_echo(cli, "alpha", "beta")
    result = ok(cli("argo", "validate", write(tmp_path / "m.json", argo_message())))
    assert "valid" in result.stdout
    assert "2 subjob(s)" in result.stdout


def test_validate_reads_stdin(cli):
    register_echo(cli, "alpha")
    result = ok(cli("argo", "validate", "-", input=json.dumps(argo_message(sites=("alpha",)))))
    assert "1 subjob(s)" in result.stdout


def test_validate_lists_every_bad_field_and_exits_2(cli, tmp_path):
    message = argo_message()
    del message["name"]
    message["subjobs"][1]["wall_time_minutes"] = "30"
    message["subjobs"][0]["config_file"] = "/etc/passwd"
    result = cli("argo", "validate", write(tmp_path / "bad.json", message))
    assert result.exit_code == 2
    assert result.stdout == ""
    for field in ("name", "subjobs[1].wall_time_minutes", "subjobs[0].config_file"):
        assert f"  {field}: " in result.stderr
    assert "Traceback" not in result.output


def test_validate_from_stdin_refuses_bad_json(cli):
    result = cli("argo", "validate", "-", input='{"name": "x", "subjobs": [')
    assert result.exit_code == 2
    assert "message: not valid JSON" in result.stderr


def test_validate_refuses_a_missing_file(cli, tmp_path):
    result = cli("argo", "validate", str(tmp_path / "nope.json"))
    assert result.exit_code == 2
    assert "FILE:" in result.stderr


def test_validate_does_not_store(cli, tmp_path):
    register_echo(cli, "alpha", "beta")
    ok(cli("argo", "validate", write(tmp_path / "m.json", argo_message())))
    assert json.loads(ok(cli("argo", "ls", "--json")).stdout) == []


# --- app ------------------------------------------------------------------------------------


def apps(cli, *args: str) -> list[dict]:
    return json.loads(ok(cli("app", "ls", "--json", *args)).stdout)


def test_app_round_trip(cli):
    result = ok(
        cli(
            "app",
            "add",
            "alpGen_wjets",
            "--site",
            "alpha",
            "--executable",
            "/bin/sh",
            "--description",
            "W-boson production with jets using AlpGen",
            "--config-script",
            "/path/to/alpGen/alpGen_cmdline.py",
            "--json",
        )
    )
    app_id = json.loads(result.stdout)["id"]
    ok(cli("app", "add", "--name", "merge", "--site", "beta", "--executable", "/bin/cat"))
    listed = apps(cli)
    assert sorted((a["site"], a["name"]) for a in listed) == [
        ("alpha", "alpGen_wjets"),
        ("beta", "merge"),
    ]
    (wjets,) = apps(cli, "--site", "alpha")
    assert wjets["id"] == app_id
    assert wjets["executable"] == "/bin/sh"
    assert wjets["config_script"] == "/path/to/alpGen/alpGen_cmdline.py"
    assert wjets["preprocess"] is None

    ok(
        cli(
            "app",
            "alter",
            "alpGen_wjets",
            "--site",
            "alpha",
            "--executable",
            "/bin/cat",
            "--preprocess",
            "/opt/alpgen/presubmit.sh",
            "--config-script",
            "",
        )
    )
    (wjets,) = apps(cli, "--site", "alpha")
    assert wjets["executable"] == "/bin/cat"
    assert wjets["preprocess"] == "/opt/alpgen/presubmit.sh"
    assert wjets["config_script"] is None, '"" clears a script'
    assert wjets["description"] == "W-boson production with jets using AlpGen"

    ok(cli("app", "rm", "alpGen_wjets", "--site", "alpha"))
    assert [(a["site"], a["name"]) for a in apps(cli)] == [("beta", "merge")]
    result = cli("app", "rm", "alpGen_wjets", "--site", "alpha")
    assert result.exit_code == 1
    assert "alpGen_wjets" in result.stderr


def test_app_ls_without_apps_says_none(cli):
    assert ok(cli("app", "ls")).stdout.strip() == "(none)"
    assert apps(cli) == []


def test_app_ls_table_has_the_app(cli):
    ok(cli("app", "add", "--name", "echo", "--site", "alpha", "--executable", "/bin/echo"))
    lines = ok(cli("app", "ls")).stdout.splitlines()
    assert lines[0].split() == ["ID", "SITE", "NAME", "EXECUTABLE"]
    assert lines[1].split()[1:] == ["alpha", "echo", "/bin/echo"]


def test_app_same_name_twice_at_a_site_is_refused(cli):
    add = ("app", "add", "--name", "echo", "--site", "alpha", "--executable", "/bin/echo")
    ok(cli(*add))
    result = cli(*add)
    assert result.exit_code == 2
    assert "name:" in result.stderr
    assert len(apps(cli)) == 1
    # the same name at another site is a different application
    ok(cli("app", "add", "--name", "echo", "--site", "beta", "--executable", "/bin/echo"))
    assert len(apps(cli)) == 2


def test_app_relative_executable_is_refused(cli):
    result = cli("app", "add", "--name", "echo", "--site", "alpha", "--executable", "bin/echo")
    assert result.exit_code == 2
    assert "executable" in result.stderr
    assert apps(cli) == []


def test_app_alter_relative_script_is_refused(cli):
    ok(cli("app", "add", "--name", "echo", "--site", "alpha", "--executable", "/bin/echo"))
    result = cli("app", "alter", "echo", "--site", "alpha", "--postprocess", "post.sh")
    assert result.exit_code == 2
    assert "postprocess" in result.stderr
    assert apps(cli)[0]["postprocess"] is None


def test_app_alter_unknown_app_exits_1(cli):
    result = cli("app", "alter", "ghost", "--site", "alpha", "--description", "x")
    assert result.exit_code == 1
    assert "ghost" in result.stderr


def test_app_alter_empty_executable_is_refused_cleanly(cli):
    ok(cli("app", "add", "--name", "echo", "--site", "alpha", "--executable", "/bin/echo"))
    result = cli("app", "alter", "echo", "--site", "alpha", "--executable", "")
    assert result.exit_code == 2
    assert "executable" in result.stderr


# --- argo submit / ls / show ----------------------------------------------------------------


def ids(result: Result) -> list[int]:
    return [row["id"] for row in json.loads(ok(result).stdout)]


def table_ids(result: Result) -> list[int]:
    lines = ok(result).stdout.splitlines()
    assert lines[0].split()[0] == "ID"
    return [int(line.split()[0]) for line in lines[1:]]


@pytest.fixture
def three_jobs(cli, tmp_path) -> tuple[int, int, int]:
    a = submit(cli, tmp_path, argo_message("a", ("alpha", "beta"), group_identifier="g1"))
    b = submit(cli, tmp_path, argo_message("b", ("beta",), group_identifier="g2"))
    c = submit(cli, tmp_path, argo_message("c", ("beta", "beta"), group_identifier="g1"))
    return a, b, c


def test_argo_submit_says_the_id_in_a_sentence_alone_with_q_and_in_json(cli, tmp_path):
    path = write(tmp_path / "m.json", argo_message())
    said = ok(cli("argo", "submit", path, "--no-start")).stdout
    quiet = ok(cli("argo", "submit", path, "--no-start", "-q")).stdout
    as_json = json.loads(ok(cli("argo", "submit", path, "--no-start", "--json")).stdout)
    first, second, third = ids(cli("argo", "ls", "--json"))[::-1]
    assert said == f"argo job {first} submitted; stored only (--no-start): nothing will start it\n"
    assert quiet == f"{second}\n"
    assert as_json == {"id": third, "state": "CREATED", "started": False}


def test_argo_submit_reads_stdin(cli):
    message = json.dumps(argo_message())
    result = ok(cli("argo", "submit", "-", "--no-start", "-q", input=message))
    (argo_id,) = ids(cli("argo", "ls", "--json"))
    assert int(result.stdout) == argo_id


def test_argo_submit_invalid_exits_2_and_stores_nothing(cli, tmp_path):
    message = argo_message(sites=("alpha", "gamma"))
    result = cli("argo", "submit", write(tmp_path / "m.json", message), "--no-start")
    assert result.exit_code == 2
    assert "subjobs[1].site" in result.stderr
    assert result.stdout == ""
    assert ids(cli("argo", "ls", "--json")) == []
    assert json.loads(ok(cli("job", "ls", "--json")).stdout) == []


def test_argo_ls_lists_newest_first(cli, three_jobs):
    a, b, c = three_jobs
    assert ids(cli("argo", "ls", "--json")) == [c, b, a]
    assert ids(cli("argo", "ls", "--limit", "2", "--json")) == [c, b]


def test_argo_ls_filters_by_group(cli, three_jobs):
    a, b, c = three_jobs
    assert ids(cli("argo", "ls", "--group", "g1", "--json")) == [c, a]
    assert ids(cli("argo", "ls", "--group", "g2", "--json")) == [b]
    assert ids(cli("argo", "ls", "--group", "g3", "--json")) == []


def test_argo_ls_filters_by_site(cli, three_jobs):
    a, b, c = three_jobs
    assert ids(cli("argo", "ls", "--site", "alpha", "--json")) == [a]
    assert ids(cli("argo", "ls", "--site", "beta", "--json")) == [c, b, a]
    assert ids(cli("argo", "ls", "--site", "beta", "--group", "g2", "--json")) == [b]


def test_argo_ls_filters_by_state(cli, three_jobs):
    a, b, c = three_jobs
    assert table_ids(cli("argo", "ls", "--state", "CREATED")) == [c, b, a]
    assert move_argo(b, "CREATED", "STAGED_IN_FAILED", "test: input missing")
    assert table_ids(cli("argo", "ls", "--state", "CREATED")) == [c, a]
    assert ids(cli("argo", "ls", "--state", "STAGED_IN_FAILED", "--json")) == [b]
    assert ok(cli("argo", "ls", "--state", "HISTORY")).stdout.strip() == "(none)"


def test_argo_ls_shows_the_current_site(cli, three_jobs):
    a, b, _ = three_jobs
    rows = {row["id"]: row for row in json.loads(ok(cli("argo", "ls", "--json")).stdout)}
    assert rows[a]["site"] == "alpha"
    assert rows[b]["site"] == "beta"
    assert rows[a]["state"] == "CREATED"
    assert rows[a]["group_identifier"] == "g1"


def test_argo_ls_unknown_state_is_invalid_input(cli):
    result = cli("argo", "ls", "--state", "FINISHED_OK")
    assert result.exit_code == 2
    assert "FINISHED_OK" in result.stderr


def test_argo_show_has_subjobs_and_events(cli, tmp_path):
    argo_id = submit(cli, tmp_path, argo_message("shown", ("beta", "alpha"), group_identifier="g9"))
    data = json.loads(ok(cli("argo", "show", str(argo_id), "--json")).stdout)
    assert data["id"] == argo_id
    assert data["name"] == "shown"
    assert data["state"] == "CREATED"
    assert data["num_subjobs"] == 2
    assert [sj["position"] for sj in data["subjobs"]] == [0, 1]
    assert [sj["site"] for sj in data["subjobs"]] == ["beta", "alpha"]
    assert [sj["state"] for sj in data["subjobs"]] == ["CREATED", "CREATED"]
    assert data["subjobs"][1]["input_url"] == data["subjobs"][0]["output_url"]
    events = data["events"]
    assert [(e["subjob_id"], e["from_state"], e["to_state"]) for e in events] == [
        (None, "", "CREATED"),
        (data["subjobs"][0]["id"], "", "CREATED"),
        (data["subjobs"][1]["id"], "", "CREATED"),
    ]


def test_argo_show_text(cli, tmp_path):
    argo_id = submit(cli, tmp_path, argo_message("shown"))
    out = ok(cli("argo", "show", str(argo_id))).stdout
    assert "subjobs:" in out
    assert "[0]" in out
    assert "site=alpha" in out
    assert "timeline:" in out
    assert out.count("-> CREATED") == 3


def test_argo_show_unknown_exits_1(cli):
    result = cli("argo", "show", "9999")
    assert result.exit_code == 1
    assert "9999" in result.stderr
    assert result.stdout == ""


def test_argo_rm_removes_the_job_and_its_subjobs(cli, tmp_path):
    argo_id = submit(cli, tmp_path, argo_message())
    ok(cli("argo", "rm", str(argo_id)))
    assert ids(cli("argo", "ls", "--json")) == []
    assert json.loads(ok(cli("job", "ls", "--json")).stdout) == []
    assert cli("argo", "show", str(argo_id)).exit_code == 1


# --- job ------------------------------------------------------------------------------------


def show_job(cli, job_id: int) -> dict:
    return json.loads(ok(cli("job", "show", str(job_id), "--json")).stdout)


def test_job_add_and_ls(cli, tmp_path):
    job_id = add_job(cli, tmp_path)
    rows = json.loads(ok(cli("job", "ls", "--json")).stdout)
    assert [r["id"] for r in rows] == [job_id]
    assert rows[0]["argo_job_id"] is None
    assert rows[0]["site"] == "alpha"
    assert rows[0]["state"] == "CREATED"
    assert json.loads(ok(cli("job", "ls", "--site", "beta", "--json")).stdout) == []


def test_job_add_reads_stdin(cli):
    message = json.dumps(balsam_message(**SINGLE))
    result = ok(cli("job", "add", "-", "--no-start", "--json", input=message))
    assert show_job(cli, json.loads(result.stdout)["id"])["name"] == "single"


def test_job_add_invalid_exits_2(cli, tmp_path):
    path = write(
        tmp_path / "job.json", balsam_message(**{**SINGLE, "num_nodes": 0, "site": "gamma"})
    )
    result = cli("job", "add", path, "--no-start")
    assert result.exit_code == 2
    assert "num_nodes" in result.stderr
    assert json.loads(ok(cli("job", "ls", "--json")).stdout) == []


def test_job_ls_includes_argo_subjobs(cli, tmp_path):
    argo_id = submit(cli, tmp_path, argo_message())
    job_id = add_job(cli, tmp_path)
    rows = json.loads(ok(cli("job", "ls", "--json")).stdout)
    assert [r["argo_job_id"] for r in rows] == [None, argo_id, argo_id]
    assert rows[0]["id"] == job_id
    beta = json.loads(ok(cli("job", "ls", "--site", "beta", "--json")).stdout)
    assert [(r["argo_job_id"], r["site"]) for r in beta] == [(argo_id, "beta")]


def test_job_alter_changes_fields(cli, tmp_path):
    job_id = add_job(cli, tmp_path)
    ok(cli("job", "alter", str(job_id), "--set", "queue=debug", "--set", "num_nodes=4"))
    data = show_job(cli, job_id)
    assert data["queue"] == "debug"
    assert data["num_nodes"] == 4
    assert data["name"] == "single"
    assert data["state"] == "CREATED"


@pytest.mark.parametrize(
    ("pair", "field"),
    [
        pytest.param("num_nodes=0", "num_nodes", id="num-nodes-0"),
        pytest.param("num_nodes=many", "num_nodes", id="num-nodes-word"),
        pytest.param("config_file=../x.cfg", "config_file", id="cfg-dotdot"),
        pytest.param("site=beta", "site", id="site-not-alterable"),
        pytest.param("application=rm", "application", id="app-not-alterable"),
        pytest.param("state=JOB_FINISHED", "state", id="state-not-alterable"),
        pytest.param("queue", "queue", id="no-equals"),
    ],
)
def test_job_alter_invalid_exits_2_and_changes_nothing(cli, tmp_path, pair, field):
    job_id = add_job(cli, tmp_path)
    before = show_job(cli, job_id)
    result = cli("job", "alter", str(job_id), "--set", pair)
    assert result.exit_code == 2
    assert f"  {field}: " in result.stderr
    assert show_job(cli, job_id) == before


def test_job_alter_unknown_job_exits_1(cli):
    result = cli("job", "alter", "9999", "--set", "queue=debug")
    assert result.exit_code == 1
    assert "9999" in result.stderr


def test_job_alter_refuses_a_job_that_is_not_created_or_failed(cli, tmp_path):
    from edgeceleryapp.state_store import move_subjob

    job_id = add_job(cli, tmp_path)
    assert move_subjob(job_id, "CREATED", ["STAGED_IN"])
    result = cli("job", "alter", str(job_id), "--set", "queue=debug")
    assert result.exit_code == 1
    assert "STAGED_IN" in result.stderr
    assert show_job(cli, job_id)["queue"] == "prod"


def test_job_alter_text_field_to_digits(cli, tmp_path):
    job_id = add_job(cli, tmp_path)
    ok(cli("job", "alter", str(job_id), "--set", "name=007"))
    assert show_job(cli, job_id)["name"] == "007"


def test_job_show_has_events(cli, tmp_path):
    job_id = add_job(cli, tmp_path)
    data = show_job(cli, job_id)
    assert [(e["from_state"], e["to_state"]) for e in data["events"]] == [("", "CREATED")]
    assert cli("job", "show", "9999").exit_code == 1


def test_job_rm(cli, tmp_path):
    keep = add_job(cli, tmp_path)
    gone = add_job(cli, tmp_path, name="to remove")
    result = ok(cli("job", "rm", str(gone)))
    assert "removed 1" in result.stdout
    assert [r["id"] for r in json.loads(ok(cli("job", "ls", "--json")).stdout)] == [keep]
    assert cli("job", "show", str(gone)).exit_code == 1
    result = cli("job", "rm", str(gone))
    assert result.exit_code == 1
    assert str(gone) in result.stderr


def test_job_rm_refuses_a_subjob_of_an_argo_job(cli, tmp_path):
    argo_id = submit(cli, tmp_path, argo_message())
    subjob_id = json.loads(ok(cli("argo", "show", str(argo_id), "--json")).stdout)["subjobs"][0][
        "id"
    ]
    result = cli("job", "rm", str(subjob_id))
    assert result.exit_code == 1
    assert f"argo job {argo_id}" in result.stderr
    assert len(json.loads(ok(cli("job", "ls", "--json")).stdout)) == 2


def test_job_rm_all_removes_only_balsam_only_jobs(cli, tmp_path):
    argo_id = submit(cli, tmp_path, argo_message())
    add_job(cli, tmp_path)
    add_job(cli, tmp_path, name="another")
    result = ok(cli("job", "rm-all", "--yes"))
    assert "removed 2" in result.stdout
    rows = json.loads(ok(cli("job", "ls", "--json")).stdout)
    assert [r["argo_job_id"] for r in rows] == [argo_id, argo_id]
    assert "removed 0" in ok(cli("job", "rm-all", "--yes")).stdout


def test_job_rm_all_asks_first(cli, tmp_path):
    job_id = add_job(cli, tmp_path)
    result = cli("job", "rm-all", input="n\n")
    assert result.exit_code == 1
    assert show_job(cli, job_id)["id"] == job_id
    assert "removed 1" in ok(cli("job", "rm-all", input="y\n")).stdout


# --- retry ----------------------------------------------------------------------------------


def test_retry_of_a_job_that_has_not_failed_exits_1(cli, tmp_path):
    argo_id = submit(cli, tmp_path, argo_message())
    result = cli("retry", str(argo_id))
    assert result.exit_code == 1
    assert result.stderr == f"error: argo job {argo_id} is CREATED, not in a failure state\n"
    assert json.loads(ok(cli("argo", "show", str(argo_id), "--json")).stdout)["state"] == "CREATED"


def test_retry_subjob_of_a_job_that_has_not_failed_exits_1(cli, tmp_path):
    job_id = add_job(cli, tmp_path)
    result = cli("retry", "--subjob", str(job_id))
    assert result.exit_code == 1
    assert "not in a failure state" in result.stderr
    result = cli("job", "retry", str(job_id))
    assert result.exit_code == 1
    assert "not in a failure state" in result.stderr


def test_retry_unknown_job_exits_1(cli):
    result = cli("retry", "9999")
    assert result.exit_code == 1
    assert "no argo job 9999" in result.stderr


def test_a_database_without_tables_is_a_clear_error_not_a_traceback(cli, env, monkeypatch):
    from edgeceleryapp.db import reset_engine
    from edgeceleryapp.settings import reset_settings

    monkeypatch.setenv("EDGECELERY_DATABASE_URL", f"sqlite:///{env.root / 'never-started.db'}")
    reset_settings()
    reset_engine()
    result = cli("argo", "ls", "--group", "G")
    assert result.exit_code == 1
    assert "database error: no such table: argo_jobs" in result.output
    assert "database_url" in result.output and "edgecelery db init" in result.output
    assert "Traceback" not in result.output


# --- broker ---------------------------------------------------------------------------------


def test_broker_site_user_prints_a_certificate_login_confined_to_the_site(cli):
    out = ok(cli("broker", "site-user", "alpha", "--user", "alpha-login", "--vhost", "prod"))
    add, clear, grant = out.stdout.splitlines()
    assert add.startswith("rabbitmqctl add_user alpha-login ")
    assert clear == "rabbitmqctl clear_password alpha-login"
    assert grant.startswith("rabbitmqctl set_permissions -p prod alpha-login '^(site\\.alpha|")
    assert "argo.jobs" not in grant and "site\\.beta" not in grant


def test_broker_site_user_refuses_an_unknown_site(cli):
    result = cli("broker", "site-user", "nosuch")
    assert result.exit_code == 2
    assert "sites.nosuch: no such site" in result.output
