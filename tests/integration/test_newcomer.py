"""The README's "From the demo to a real site", followed as a newcomer would, step by step,
through the installed ``edgecelery`` command: from a clean home and settings directory, write
the settings file, start a broker (the project's own Redis, with its append-only file), create
the database, register an application, start the workers, submit a file from examples/ as it
is, follow it to HISTORY, read its batch job's output, and stop the workers with SIGTERM as
systemd does.

The one change from the README: site theta uses the ``local`` scheduler, since no Slurm runs
here (tests/integration/test_slurm.py covers that one)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgeceleryapp.devstack import RedisServer, wait_for, wait_for_workers
from tests.helpers import children_of

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
EDGECELERY = str(Path(sys.executable).parent / "edgecelery")


class Newcomer:
    """A shell of a user who has only the installed command and the README."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("EDGECELERY_")}
        self.env.update(HOME=str(home), XDG_DATA_HOME=str(home / ".local" / "share"))
        self.workers: list[subprocess.Popen] = []

    def run(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run(
            [EDGECELERY, *args],
            env=self.env,
            cwd=self.home,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def ok(self, *args: str, timeout: float = 60) -> str:
        done = self.run(*args, timeout=timeout)
        assert done.returncode == 0, f"edgecelery {' '.join(args)}: {done.stderr}{done.stdout}"
        return done.stdout + done.stderr

    def start_worker(self, *args: str, log: Path) -> subprocess.Popen:
        process = subprocess.Popen(
            [EDGECELERY, "worker", *args],
            env=self.env,
            cwd=self.home,
            stdout=log.open("w"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.workers.append(process)
        return process


@pytest.fixture
def newcomer(tmp_path: Path) -> Iterator[Newcomer]:
    home = tmp_path / "home"
    home.mkdir()
    user = Newcomer(home)
    try:
        yield user
    finally:
        for process in user.workers:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(10)


def test_from_a_clean_directory_to_a_job_in_history_and_its_logs(newcomer, tmp_path):
    # Nothing configured yet: the command says so rather than guessing quietly.
    first = newcomer.run("worker", "--site", "theta")
    assert first.returncode == 2
    assert "no settings file found" in first.stderr

    # 2. A broker that keeps its messages (Redis with appendonly, appendfsync everysec).
    redis = RedisServer(tmp_path / "redis").start()
    try:
        # 3. The settings file, as the README writes it (paths under this test's folder).
        etc = tmp_path / "etc"
        etc.mkdir()
        config = etc / "edgecelery.toml"
        config.write_text(
            f'broker_url = "{redis.url}"\n'
            f'database_url = "sqlite:///{tmp_path / "var" / "edgecelery.db"}"\n'
            "\n[argo]\n"
            f'staging_dir = "{tmp_path / "var" / "argo"}"\n'
            "\n[sites.theta]\n"
            'scheduler = "local"\n'
            f'workdir = "{tmp_path / "projects" / "theta"}"\n'
            "poll_interval = 0.5\nstatus_interval = 2\n"
        )
        (tmp_path / "var").mkdir()
        newcomer.env["EDGECELERY_CONFIG"] = str(config)

        # 4. The database.
        assert f"settings read from {config}" in newcomer.ok("db", "init")

        # 5. The application the example names, at its site.
        said = newcomer.ok(
            "app", "add", "hello", "--site", "theta", "--executable", "/bin/hostname"
        )
        assert "application 'hello' registered at site 'theta'" in said

        # 6. The workers, as their systemd units start them.
        logs = tmp_path / "logs"
        logs.mkdir()
        argo = newcomer.start_worker(
            "--argo", "--beat-schedule", str(tmp_path / "var" / "beat"), log=logs / "argo.log"
        )
        site = newcomer.start_worker("--site", "theta", log=logs / "theta.log")
        wait_for_workers(redis.url, ["argo", "theta"])
        assert f"settings read from {config}" in (logs / "theta.log").read_text()

        # 7. Submit a file from examples/ unchanged, and follow it to the end.
        example = str(ROOT / "examples" / "jobs" / "argo-linear.json")
        assert "valid: argo job 'hello-chain' with 2 subjob(s)" in newcomer.ok(
            "argo", "validate", example
        )
        argo_id = int(newcomer.ok("argo", "submit", "-q", example).strip())
        followed = newcomer.run("argo", "show", str(argo_id), "--follow", timeout=180)
        assert followed.returncode == 0, followed.stdout + followed.stderr
        assert f"argo job {argo_id} stopped in HISTORY" in followed.stdout

        # 8. The batch job's output: hello is /bin/hostname.
        shown = json.loads(newcomer.ok("argo", "show", str(argo_id), "--json"))
        assert shown["state"] == "HISTORY"
        for subjob in shown["subjobs"]:
            assert read_output(newcomer, subjob["id"], tmp_path).strip() == socket.gethostname()

        # Stopping as systemd does: SIGTERM to the main process, a clean exit, nothing left.
        for process in (argo, site):
            children = children_of(process.pid)
            os.kill(process.pid, signal.SIGTERM)
            assert process.wait(60) == 0, (logs / "argo.log").read_text()[-2000:]
            wait_for(
                lambda children=children: not any(Path(f"/proc/{p}").exists() for p in children),
                30,
                "the worker's pool processes to exit",
            )
    finally:
        redis.stop()


def read_output(newcomer: Newcomer, subjob_id: int, root: Path) -> str:
    """Through ``edgecelery job logs`` where this version has it; else the file the README
    names (``<workdir>/jobs/<id>/.edgecelery/batch.out``)."""
    if newcomer.run("job", "logs", "-h").returncode == 0:
        return newcomer.ok("job", "logs", str(subjob_id))
    path = root / "projects" / "theta" / "jobs" / str(subjob_id) / ".edgecelery" / "batch.out"
    return path.read_text()
