"""A job's batch output, one command away: ``edgecelery job logs`` (run as the installed
command) for each attempt and stream, following a running job, reading over SSH; ``job show``
names the work directory; the timeline marks the times the poller noticed late."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from backends.runners import ssh as ssh_runner
from backends.runners.base import Runner
from backends.runners.local import LocalRunner
from edgeceleryapp import applications, batch_logs, job_control
from edgeceleryapp.devstack import wait_for
from edgeceleryapp.settings import get_settings, reset_settings
from tests.helpers import balsam_message, poll_until_ended, run_to_submitted, script, subjob
from tests.sshd import start_sshd
from workflows.intake import submit_balsam

EDGECELERY = Path(sys.executable).parent / "edgecelery"


def edgecelery(*args: str, tz: str = "UTC") -> subprocess.CompletedProcess:
    """The installed command, with this test's settings (EDGECELERY_CONFIG) and a time zone."""
    return subprocess.run(
        [str(EDGECELERY), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "TZ": tz},
        check=False,
    )


def talky_app(root: Path, exit_code: int = 1) -> None:
    """``talky`` at alpha: says which run it is on stdout and on stderr, then exits
    ``exit_code``; with a file ``hold`` in its work directory it waits until ``go`` appears."""
    exe = script(
        root / "apps" / "talky" / "app.py",
        f"""
        import os, sys, time
        runs = open("runs.log", "a+")
        runs.write("run\\n"); runs.flush()
        n = len(open("runs.log").read().splitlines())
        print(f"hello from run {{n}}", flush=True)
        print(f"trouble in run {{n}}", file=sys.stderr, flush=True)
        if os.path.exists("hold"):
            deadline = time.monotonic() + 60
            while not os.path.exists("go") and time.monotonic() < deadline:
                time.sleep(0.02)
            print("after the wait", flush=True)
        sys.exit({exit_code})
        """,
    )
    applications.add_app("talky", "alpha", exe)


def run_once(job_id: int) -> None:
    run_to_submitted(job_id)
    poll_until_ended(job_id)


def test_each_attempt_keeps_its_output_and_job_logs_prints_any_of_them(env):
    talky_app(env.root)
    job_id = submit_balsam(balsam_message(app="talky"), start=False)
    run_once(job_id)
    assert subjob(job_id).state == "EXECUTION_FINISHED_FAILED"
    job_control.retry_subjob(job_id)  # a new attempt; its chain goes to the test broker
    assert subjob(job_id).attempt == 2
    # Before the new batch job runs, the output that explains the failure is the default.
    first = edgecelery("job", "logs", str(job_id))
    assert first.returncode == 0, first.stderr
    assert first.stdout == "hello from run 1\n"
    run_once(job_id)

    control = env.site_workdir("alpha") / "jobs" / str(job_id) / ".edgecelery"
    assert (control / "batch.1.out").read_text() == "hello from run 1\n"
    assert (control / "batch.2.out").read_text() == "hello from run 2\n"
    assert edgecelery("job", "logs", str(job_id)).stdout == "hello from run 2\n"
    assert edgecelery("job", "logs", str(job_id), "--attempt", "1").stdout == "hello from run 1\n"
    errors = edgecelery("job", "logs", str(job_id), "--stderr", "--attempt", "1")
    assert errors.stdout == "trouble in run 1\n"


def test_job_logs_follows_a_running_batch_job_to_its_end(env):
    talky_app(env.root, exit_code=0)
    job_id = submit_balsam(balsam_message(app="talky"), start=False)
    workdir = env.site_workdir("alpha") / "jobs" / str(job_id)
    workdir.mkdir(parents=True)
    (workdir / "hold").write_text("")
    run_to_submitted(job_id)
    follower = subprocess.Popen(
        [str(EDGECELERY), "job", "logs", str(job_id), "--follow"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert follower.stdout is not None
        assert follower.stdout.readline() == "hello from run 1\n"  # printed while it runs
        assert follower.poll() is None
        (workdir / "go").write_text("")
        poll_until_ended(job_id)
        out, err = follower.communicate(timeout=30)
    finally:
        follower.kill()
    assert follower.returncode == 0, err
    assert out == "after the wait\n"


def test_job_logs_says_why_there_is_nothing_yet(env):
    talky_app(env.root)
    job_id = submit_balsam(balsam_message(app="talky"), start=False)
    result = edgecelery("job", "logs", str(job_id))
    assert result.returncode == 1
    assert f"job {job_id} attempt 1 standard output: not written yet" in result.stderr
    assert "CREATED" in result.stderr and "--follow" in result.stderr


def test_job_logs_refuses_an_attempt_the_job_never_had(env):
    talky_app(env.root)
    job_id = submit_balsam(balsam_message(app="talky"), start=False)
    result = edgecelery("job", "logs", str(job_id), "--attempt", "3")
    assert result.returncode == 2
    assert f"attempt: job {job_id} has attempt 1 only, not 3" in result.stderr
    assert edgecelery("job", "logs", "999").returncode == 1


def test_job_show_names_the_work_directory_and_the_logs_command(env):
    talky_app(env.root)
    job_id = submit_balsam(balsam_message(app="talky"), start=False)
    workdir = str(env.site_workdir("alpha") / "jobs" / str(job_id))
    shown = json.loads(edgecelery("job", "show", str(job_id), "--json").stdout)
    assert shown["workdir"] == workdir
    text = edgecelery("job", "show", str(job_id)).stdout
    assert re.search(rf"^workdir +{re.escape(workdir)}$", text, re.M)
    assert f"edgecelery job logs {job_id}" in text


def test_times_are_local_to_the_second_and_poller_seen_ones_are_marked(env):
    talky_app(env.root)
    job_id = submit_balsam(balsam_message(app="talky"), start=False)
    run_once(job_id)
    events = json.loads(edgecelery("job", "show", str(job_id), "--json").stdout)["events"]
    seen = [e["to_state"] for e in events if e["seen_by_poller"]]
    assert seen == ["QUEUED", "RUNNING", "EXECUTION_FINISHED_FAILED"]

    text = edgecelery("job", "show", str(job_id), tz="EST5").stdout
    timeline = text.split("timeline:\n", 1)[1].splitlines()
    for event, line in zip(events, timeline, strict=True):
        utc = datetime.fromisoformat(event["time"].removesuffix("Z"))
        local = (utc - timedelta(hours=5)).strftime("%Y-%m-%d %H:%M:%S EST")
        marked = f"≤ {local} (seen by the poller)"
        assert line.strip().startswith(marked if event["seen_by_poller"] else local), line
        assert (marked in line) == event["seen_by_poller"]
    assert not re.search(r"\d\d:\d\d:\d\d\.\d", text), "no fractions of a second"
    created = re.search(r"^created_at +(.+)$", text, re.M)
    assert created and created.group(1).endswith(" EST")


# --- reading where the files lie --------------------------------------------------------------


def test_runners_read_a_window_of_a_file_or_say_it_is_absent(env, tmp_path):
    path = tmp_path / "log"
    path.write_bytes(b"0123456789\xff")
    runner = LocalRunner(get_settings().site("alpha"))
    for read in (runner.read_file, lambda *a: Runner.read_file(runner, *a)):  # and the default
        assert read(str(path)) == b"0123456789\xff"
        assert read(str(path), 3, 2) == b"34"
        assert read(str(path), -3) == b"89\xff"
        assert read(str(tmp_path / "absent")) is None


def test_a_site_reached_over_ssh_has_its_output_read_over_ssh(env, sshd):
    text = env.config.read_text().replace("[sites.alpha]\n", '[sites.alpha]\nrunner = "ssh"\n')
    text += (
        f'[sites.alpha.ssh]\nhost = "127.0.0.1"\nport = {sshd.port}\nusername = "root"\n'
        f'key_file = "{sshd.client_key}"\nknown_hosts = "{sshd.known_hosts}"\n'
    )
    env.config.write_text(text)
    reset_settings()
    talky_app(env.root)
    job_id = submit_balsam(balsam_message(app="talky"), start=False)
    run_once(job_id)
    ssh_runner.connections.drop(("127.0.0.1", sshd.port, "root"))
    log = batch_logs.locate(job_id, stream="err")
    assert batch_logs.read(log) == b"trouble in run 1\n"
    assert batch_logs.read(log, -4) == b"n 1\n"
    assert ("127.0.0.1", sshd.port, "root") in ssh_runner.connections.clients, "read over SSH"
    result = edgecelery("job", "logs", str(job_id))
    assert result.returncode == 0 and result.stdout == "hello from run 1\n"


@pytest.fixture(params=["sftp", "no-sftp"])
def sshd(request, tmp_path_factory):
    """A login node whose sshd offers SFTP, and one that offers commands only."""
    extra = ("Subsystem sftp internal-sftp",) if request.param == "sftp" else ()
    server = start_sshd(tmp_path_factory.mktemp("sshd"), extra)
    try:
        yield server
    finally:
        server.stop()


def test_follow_waits_for_a_job_not_started_yet(env):
    """--follow on a job still waiting prints nothing and goes on until the output comes."""
    talky_app(env.root, exit_code=0)
    job_id = submit_balsam(balsam_message(app="talky"), start=False)
    follower = subprocess.Popen(
        [str(EDGECELERY), "job", "logs", str(job_id), "--follow"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        run_once(job_id)
        out, err = follower.communicate(timeout=30)
    finally:
        follower.kill()
    assert follower.returncode == 0, err
    assert out == "hello from run 1\n"
    wait_for(lambda: follower.poll() is not None, 5, "the follower to end")
