"""Watching the real service: ``edgecelery watch`` and ``argo show --follow`` against a running
deployment, status mail through a real SMTP server (once each, a duplicate message ignored),
and Flower behind its authentication listing the deployment's workers."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgeceleryapp.devstack import free_port, wait_for
from edgeceleryapp.status_outbox import publish
from tests.helpers import echo_app
from tests.integration.conftest import Deployment, running_deployment
from tests.smtpserver import Mailbox, smtp_server

pytestmark = pytest.mark.integration
SITES = ("alpha", "beta")
FLOWER_AUTH = "ops:flower-secret"


def _env(values: dict, prefix: str) -> dict[str, str]:
    return {
        f"{prefix}{k.upper()}": (str(v).lower() if isinstance(v, bool) else str(v))
        for k, v in values.items()
    }


@pytest.fixture(scope="module")
def watched(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Deployment, Mailbox]]:
    root = tmp_path_factory.mktemp("monitor")
    with smtp_server(root / "smtp") as box:
        extra = {
            **_env(box.settings(batch_window=1), "EDGECELERY_MAIL__"),
            "EDGECELERY_FLOWER__BASIC_AUTH": json.dumps([FLOWER_AUTH]),
            "EDGECELERY_FLOWER__DB": str(root / "flower.db"),
        }
        with running_deployment(root, SITES, env_extra=extra) as dep:
            echo_app(dep.root, "alpha", name="stepone")
            echo_app(dep.root, "beta", name="steptwo")
            yield dep, box


def message(name: str, email: str = "", **fields) -> dict:
    return {
        "name": name,
        "user_id": f"{name}.job",
        "group_identifier": "monitor",
        "email": email,
        "job_status_routing_key": "monitor_jobs",
        "subjobs": [
            {"name": "one", "site": "alpha", "application": "stepone"},
            {"name": "two", "site": "beta", "application": "steptwo"},
        ],
        **fields,
    }


class Lines:
    """A command's standard output read on a thread, so a test waits for a line."""

    def __init__(self, dep: Deployment, *args: str):
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "edgeceleryapp.cli", *args],
            env=dep.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[str] = []
        self.errors: list[str] = []
        threading.Thread(
            target=self._read, args=(self.proc.stdout, self.lines), daemon=True
        ).start()
        threading.Thread(
            target=self._read, args=(self.proc.stderr, self.errors), daemon=True
        ).start()

    @staticmethod
    def _read(stream, into: list[str]) -> None:  # type: ignore[no-untyped-def]
        for line in stream:
            into.append(line.rstrip("\n"))

    def wait_line(self, text: str, timeout: float = 60) -> str:
        return wait_for(
            lambda: next((line for line in self.lines if text in line), None),
            timeout,
            f"a line with {text!r} (stdout {self.lines}, stderr {self.errors})",
        )

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


def test_watch_and_follow_print_the_job_to_its_end(watched) -> None:
    dep, _ = watched
    everything = Lines(dep, "watch")
    only_one = None
    try:
        wait_for(lambda: everything.errors, 30, "watch to bind its queue")
        # Bound before the job exists, so that none of its messages can pass before it: the
        # job's id is the next one (ids are given in order, and nothing else submits here).
        listed = json.loads(dep.cli("argo", "ls", "--json"))
        next_id = max((job["id"] for job in listed), default=0) + 1
        only_one = Lines(dep, "watch", "--routing-key", "monitor_jobs", "--job", str(next_id))
        wait_for(lambda: only_one.errors, 30, "watch --job to bind its queue")
        argo_id = dep.submit(message("followed"))
        assert argo_id == next_id
        follow = subprocess.run(
            [sys.executable, "-m", "edgeceleryapp.cli", "argo", "show", str(argo_id), "--follow"],
            env=dep.env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert follow.returncode == 0, follow.stderr
        out = follow.stdout.splitlines()
        assert out[-1] == f"argo job {argo_id} stopped in HISTORY"
        assert any(f"argo {argo_id}" in line and "-> SUBJOB_RUNNING" in line for line in out)
        assert any("@beta" in line and "-> JOB_FINISHED" in line for line in out)
        # Each event once, although the database and the messages both bring it.
        assert len(out) == len(set(out))
        everything.wait_line("-> SUBJOBS_COMPLETED")
        final = everything.wait_line("-> HISTORY")
        assert f"argo {argo_id}" in final
        only_one.wait_line("-> HISTORY")
        assert all(f"argo {argo_id}" in line for line in only_one.lines)
    finally:
        everything.stop()
        if only_one:
            only_one.stop()


def test_status_mail_once_per_ended_job(watched) -> None:
    dep, box = watched
    before = len(box.mails)
    done = dep.submit(message("mailed", email="a@example.org,b@example.org"))
    dep.wait_state(done, {"HISTORY"})
    wait_for(lambda: len(box.mails) > before, 60, "the mail of the finished job")
    mail = box.mails[before]
    assert mail["Subject"] == f"[edgecelery] argo job {done} (mailed): HISTORY"
    assert mail["X-Envelope-To"] == "a@example.org, b@example.org"
    # The final status message delivered again: no second mail. A failing job after it
    # (its messages queue behind the duplicate) gets its own single mail.
    history = next(e for e in dep.show(done)["events"] if e["to_state"] == "HISTORY")
    body = {
        "event_id": history["id"],
        "kind": "argo",
        "argo_job_id": done,
        "subjob_id": None,
        "name": "mailed",
        "site": None,
        "from_state": history["from_state"],
        "to_state": "HISTORY",
        "time": history["time"],
        "message": "",
    }
    assert publish([("monitor_jobs", body)])
    failed = dep.submit(
        message("broken", email="a@example.org", input_url=f"local://{dep.data}/missing")
    )
    dep.wait_state(failed, {"STAGED_IN_FAILED"})
    wait_for(lambda: len(box.mails) > before + 1, 60, "the mail of the failed job")
    subjects = [m["Subject"] for m in box.mails[before:]]
    assert subjects == [
        f"[edgecelery] argo job {done} (mailed): HISTORY",
        f"[edgecelery] argo job {failed} (broken): STAGED_IN_FAILED",
    ]


def _get(url: str, auth: str | None = None) -> tuple[int, str]:
    headers = {"Authorization": "Basic " + base64.b64encode(auth.encode()).decode()} if auth else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_flower_behind_its_authentication_lists_the_workers(watched, tmp_path: Path) -> None:
    dep, _ = watched
    open_env = {k: v for k, v in dep.env.items() if k != "EDGECELERY_FLOWER__BASIC_AUTH"}
    refused = subprocess.run(
        [sys.executable, "-m", "edgeceleryapp.cli", "flower"],
        env=open_env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode == 2 and "--insecure" in refused.stderr
    port = free_port()
    log = tmp_path / "flower.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "edgeceleryapp.cli", "flower", "--port", str(port)],
        env=dep.env,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:

        def workers() -> dict | None:
            if proc.poll() is not None:
                raise AssertionError(log.read_text())
            try:
                status, text = _get(base + "/api/workers?refresh=1", FLOWER_AUTH)
            except OSError:
                return None
            found = json.loads(text) if status == 200 else {}
            names = {name.split("@")[0] for name in found}
            return found if {"argo", *SITES} <= names else None

        wait_for(workers, 60, "Flower to list the workers", interval=0.5)
        assert _get(base + "/workers")[0] == 401
        assert _get(base + "/api/workers")[0] == 401
        assert _get(base + "/workers", "ops:wrong")[0] == 401
        status, page = _get(base + "/workers", FLOWER_AUTH)
        assert status == 200 and "var autorefresh" in page
        metrics = _get(base + "/metrics")
        assert metrics[0] == 200 and "flower_events_total" in metrics[1]

        # Task events are off in the workers until Flower switches them on (at once and then
        # every few seconds): a job run while Flower watches is in its task list, step by step.
        # Until Flower's first switch reaches the workers, a job's tasks go unseen: then the
        # next job is run.
        def steps_seen() -> set[str] | None:
            dep.wait_state(dep.submit(message("flowerwatched")), {"HISTORY"})
            status, text = _get(base + "/api/tasks", FLOWER_AUTH)
            seen = {t["name"] for t in json.loads(text).values()} if status == 200 else set()
            return seen if {"site.stage_in", "site.submit", "argo.finish"} <= seen else None

        wait_for(steps_seen, 90, "Flower to list a job's tasks", interval=0.1)
    finally:
        proc.terminate()
        proc.wait(20)
    # Persistent state: Flower saved its task history where the settings say.
    db = Path(dep.env["EDGECELERY_FLOWER__DB"])
    assert any(p.name.startswith(db.name) for p in db.parent.iterdir())
