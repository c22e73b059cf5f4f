"""What a user meets after the demo, through the installed ``edgecelery`` command (a
subprocess, as a shell runs it): which settings file was read, errors that say what to do,
validation that catches what the first job would hit, and one grammar for the commands.

The test deployment (``env``: sites alpha and beta, local runner) is named by
``EDGECELERY_CONFIG``, which the subprocesses inherit."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from edgeceleryapp.state_store import move_argo
from tests.helpers import argo_message

EDGECELERY = str(Path(sys.executable).parent / "edgecelery")


def run(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None):
    return subprocess.run(
        [EDGECELERY, *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
        env=env if env is not None else dict(os.environ),
    )


def ok(done: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert done.returncode == 0, done.stderr
    return done


def write(path: Path, data: object) -> str:
    path.write_text(json.dumps(data))
    return str(path)


# --- which settings file ---------------------------------------------------------------------


def test_a_missing_config_option_names_the_file_not_a_variable(tmp_path):
    done = run("--config", str(tmp_path / "nope.toml"), "argo", "ls")
    assert done.returncode == 2
    assert f"settings file {tmp_path / 'nope.toml'} does not exist" in done.stderr
    assert "EDGECELERY_CONFIG" not in done.stderr


@pytest.mark.parametrize(
    "make, problem",
    [
        pytest.param(lambda p: p.mkdir(), "is a directory", id="directory"),
        pytest.param(lambda p: p.write_bytes(b"\xff\xfe = 1"), "is not UTF-8 text", id="binary"),
    ],
)
def test_an_unreadable_settings_file_is_named_as_such(tmp_path, make, problem):
    path = tmp_path / "edgecelery.toml"
    make(path)
    done = run("argo", "ls", env={**os.environ, "EDGECELERY_CONFIG": str(path)})
    assert done.returncode == 2
    assert f"settings file {path} {problem}" in done.stderr


def test_worker_without_a_settings_file_says_defaults_are_used(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "EDGECELERY_CONFIG"}
    done = run("worker", "--site", "lab", cwd=tmp_path, env=env)
    assert done.returncode == 2
    assert "sites.lab: no such site (known: none)" in done.stderr
    assert "no settings file found" in done.stderr
    assert "built-in defaults used" in done.stderr


def test_worker_for_an_unknown_site_names_the_file_and_the_known_sites(env):
    done = run("worker", "--site", "lab")
    assert done.returncode == 2
    assert "known: alpha, beta" in done.stderr
    assert f"settings read from {env.config}" in done.stderr


def test_an_unreachable_broker_is_named_with_the_settings_file(env, tmp_path):
    message = write(tmp_path / "m.json", argo_message())
    broker = "redis://127.0.0.1:9/0"  # the discard port: nothing listens there
    done = run("argo", "submit", message, env={**os.environ, "EDGECELERY_BROKER_URL": broker})
    assert done.returncode == 1, done.stderr
    assert f"broker error: broker_url = {broker} (settings read from {env.config})" in done.stderr
    assert "Traceback" not in done.stderr


# --- validation a user can act on ------------------------------------------------------------


def test_validate_refuses_an_application_not_registered_at_its_site(env, tmp_path):
    ok(run("app", "add", "echo", "--site", "alpha", "--executable", "/bin/echo"))
    done = run("argo", "validate", write(tmp_path / "m.json", argo_message()))
    assert done.returncode == 2
    assert "subjobs[1].application: 'echo' is not registered at site 'beta'" in done.stderr
    assert "subjobs[0]" not in done.stderr
    ok(run("app", "add", "echo", "--site", "beta", "--executable", "/bin/echo"))
    assert "valid: argo job" in ok(run("argo", "validate", str(tmp_path / "m.json"))).stdout


def test_validate_says_when_it_could_not_ask_the_database(env, tmp_path):
    unreachable = f"sqlite:///{tmp_path / 'no' / 'such' / 'dir' / 'x.db'}"
    done = run(
        "argo",
        "validate",
        write(tmp_path / "m.json", argo_message()),
        env={**os.environ, "EDGECELERY_DATABASE_URL": unreachable},
    )
    assert done.returncode == 0, done.stderr
    assert "valid: argo job" in done.stdout
    assert "the database cannot be asked" in done.stderr
    assert "applications not checked" in done.stderr


def test_an_unknown_field_suggests_the_nearest_name(env, tmp_path):
    message = argo_message(sites=("alpha",), nmae="x")
    message["subjobs"][0]["wall_time"] = 30
    done = run("argo", "validate", "--schema-only", write(tmp_path / "m.json", message))
    assert done.returncode == 2
    assert "subjobs[0].wall_time: unknown field; did you mean 'wall_time_minutes'?" in done.stderr
    assert "nmae: unknown field; did you mean 'name'?" in done.stderr


def test_a_url_without_a_scheme_names_the_accepted_schemes(env, tmp_path):
    message = argo_message(sites=("alpha",), input_url="/data/in")
    done = run("argo", "validate", "--schema-only", write(tmp_path / "m.json", message))
    assert done.returncode == 2
    line = next(x for x in done.stderr.splitlines() if x.strip().startswith("input_url:"))
    for scheme in ("local://", "file://", "sftp://", "gsiftp://", "https://"):
        assert scheme in line
    assert "not allowed" not in line


def test_app_add_checks_the_executable_at_a_local_site(env, tmp_path):
    done = run("app", "add", "x", "--site", "alpha", "--executable", str(tmp_path / "nope"))
    assert done.returncode == 2
    assert f"executable: {tmp_path / 'nope'} does not exist" in done.stderr
    plain = tmp_path / "plain"
    plain.write_text("#!/bin/sh\n")
    done = run("app", "add", "x", "--site", "alpha", "--executable", str(plain))
    assert done.returncode == 2
    assert "is not executable" in done.stderr
    assert json.loads(ok(run("app", "ls", "--json")).stdout) == [], "nothing stored"


def test_app_add_at_an_unknown_site_lists_the_known_ones(env):
    done = run("app", "add", "x", "--site", "gamma", "--executable", "/bin/echo")
    assert done.returncode == 2
    assert "no site named 'gamma' is configured (known: alpha, beta)" in done.stderr


# --- one grammar -----------------------------------------------------------------------------


def test_app_add_takes_the_name_as_rm_does_and_prints_a_sentence(env):
    added = ok(run("app", "add", "echo", "--site", "alpha", "--executable", "/bin/echo"))
    assert added.stdout.startswith("application 'echo' registered at site 'alpha' (id ")
    # The option of earlier versions still works.
    as_json = ok(
        run("app", "add", "--name", "cat", "--site", "alpha", "--executable", "/bin/cat", "--json")
    )
    assert json.loads(as_json.stdout)["name"] == "cat"
    both = run("app", "add", "x", "--name", "y", "--site", "alpha", "--executable", "/bin/cat")
    assert both.returncode == 2
    removed = ok(run("app", "rm", "echo", "--site", "alpha"))
    assert removed.stdout.strip() == "application 'echo' removed from site 'alpha'"


@pytest.mark.parametrize("group", ["argo", "job", "app"])
def test_an_unknown_site_in_a_filter_is_an_error(env, group):
    done = run(group, "ls", "--site", "nosite")
    assert done.returncode == 2
    assert "--site: no site named 'nosite' (known: alpha, beta;" in done.stderr
    assert "(none)" not in done.stdout


def test_argo_retry_and_job_retry_print_a_sentence(env, tmp_path):
    argo_id = int(
        ok(
            run("argo", "submit", "-q", "--no-start", write(tmp_path / "a.json", argo_message()))
        ).stdout
    )
    assert move_argo(argo_id, "CREATED", "STAGED_IN_FAILED", "test: input missing")
    done = ok(run("argo", "retry", str(argo_id)))
    assert done.stdout.strip() == f"argo job {argo_id} restarted; it is now CREATED"
    assert move_argo(argo_id, "CREATED", "STAGED_IN_FAILED", "test: input missing")
    # The short form stays, with the same answer (and JSON on request).
    assert json.loads(ok(run("retry", str(argo_id), "--json")).stdout) == {
        "id": argo_id,
        "state": "CREATED",
    }
    refused = run("job", "retry", "999999")
    assert refused.returncode == 1
    assert "999999" in refused.stderr
    assert "retry" in ok(run("argo", "-h")).stdout
