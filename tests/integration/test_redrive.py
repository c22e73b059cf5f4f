"""Work survives lost messages and dead workers: leases keep a long step to one execution
whatever the broker's visibility timeout, and the reconciler sends again what a dead worker
left (docs/architecture.md; the DESIGN principle "the database drives; messages carry work")."""

from __future__ import annotations

import http.server
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgeceleryapp import applications
from edgeceleryapp.devstack import wait_for
from tests.helpers import (
    SUBJOB_PATH,
    argo_message,
    echo_app,
    script,
    slow_preprocess_app,
    state_changes,
)
from tests.integration.conftest import running_deployment

pytestmark = pytest.mark.integration


class SlowFile(http.server.BaseHTTPRequestHandler):
    """Serves one file in 1-byte-per-second chunks of ``seconds`` seconds in all, counting
    every request: a stage-in that takes as long as the test wants."""

    seconds = 14
    requests: list[str] = []

    def do_GET(self) -> None:
        type(self).requests.append(self.path)
        body = b"x" * self.seconds
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        for i in range(len(body)):
            self.wfile.write(body[i : i + 1])
            self.wfile.flush()
            time.sleep(1)  # the server's pace, not a wait for the test's sake

    def log_message(self, *_args: object) -> None:
        pass


@pytest.fixture
def slow_server() -> Iterator[str]:
    SlowFile.requests = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), SlowFile)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/input.dat"
    finally:
        server.shutdown()
        server.server_close()


def test_a_stage_in_three_times_the_visibility_timeout_runs_once(tmp_path, slow_server):
    """Redis delivers the stage-in again after visibility_timeout (4 s here) while the first
    copy still downloads (14 s); the copy finds the lease and ends quietly."""
    loopback = {"alpha": {"transfers": {"hosts": ["127.0.0.1"]}}}
    with running_deployment(tmp_path, ("alpha",), loopback, lease_seconds=3, concurrency=2) as dep:
        echo_app(dep.root, "alpha", name="reader")
        message = argo_message("slow", sites=("alpha",), app="reader")
        message["subjobs"][0]["input_url"] = slow_server
        argo_id = dep.submit(message)
        final = dep.wait_state(
            argo_id, {"HISTORY", "STAGED_IN_FAILED", "SUBJOB_SUBMITTED_FAILED"}, 90
        )
        assert final["state"] == "HISTORY"
        assert SlowFile.requests == ["/input.dat"], "the stage-in ran once"
        (sj,) = final["subjobs"]
        timeline = state_changes(final["events"], sj["id"])
        assert timeline == SUBJOB_PATH, "no step twice"
        worker_log = (dep.root / "logs" / "alpha.log").read_text()
        assert "another execution is working on site.stage_in" in worker_log


def test_with_shipped_defaults_a_killed_site_worker_s_subjob_continues(tmp_path):
    """Shipped lease, re-drive and visibility settings (only the poll interval is short): the
    site worker dies in the middle of a preprocess step, a new one starts, and the subjob goes
    on within two minutes."""
    with running_deployment(tmp_path, ("alpha",), shipped_defaults=True) as dep:
        started, go = slow_preprocess_app(dep.root, dep.data, "alpha")
        argo_id = dep.submit(argo_message("killed", sites=("alpha",), app="slowpre"))
        wait_for(started.exists, 60, "the preprocess step to start")
        dep.workers["alpha"].kill(signal.SIGKILL)
        go.write_text("")
        dep.start_worker("alpha")
        restarted = time.monotonic()
        final = dep.wait_state(argo_id, {"HISTORY", "SUBJOB_IN_PREPROCESSED_FAILED"}, 150)
        assert final["state"] == "HISTORY"
        assert time.monotonic() - restarted < 120, "continued within two minutes"
        (sj,) = final["subjobs"]
        assert started.read_text().count("started") == 2, "the killed step ran again, once"
        workdir = Path(dep.root / "sites" / "alpha" / "jobs" / str(sj["id"]))
        assert (workdir / "runs.log").read_text() == "run\n", "the application ran once"
        messages = [e["message"] for e in final["events"] if e["subjob_id"] == sj["id"]]
        assert any(m.startswith("re-driven: no progress for") for m in messages), messages


def test_a_spawning_postprocess_killed_with_its_worker_adds_its_children_once(tmp_path):
    """Shipped defaults (only the poll interval is short): the site worker is SIGKILLed while
    a postprocess that spawns two children runs (``children.json`` already written); a new
    worker runs the postprocess again, and the children are added, and run, once."""
    with running_deployment(tmp_path, ("alpha",), shipped_defaults=True) as dep:
        started, go = dep.data / "post-started", dep.data / "post-go"
        echo_app(dep.root, "alpha")
        post = script(
            dep.root / "apps" / "spawner" / "post.py",
            f"""
            import os, time
            from edgeceleryapp import dag
            dag.spawn_child("child-a", "alpha", "echo")
            dag.spawn_child("child-b", "alpha", "echo")
            open({str(started)!r}, "a").write("started\\n")
            deadline = time.time() + 300
            while not os.path.exists({str(go)!r}) and time.time() < deadline:
                time.sleep(0.05)
            """,
        )
        exe = script(dep.root / "apps" / "spawner" / "app.py", 'open("ran", "a").write("x")\n')
        applications.add_app("spawner", "alpha", exe, postprocess=post)
        argo_id = dep.submit(argo_message("spawns", sites=("alpha",), app="spawner"))
        wait_for(started.exists, 90, "the postprocess to start")
        dep.workers["alpha"].kill(signal.SIGKILL)
        go.write_text("")
        dep.start_worker("alpha")
        final = dep.wait_state(argo_id, {"HISTORY", "SUBJOBS_COMPLETED_FAILED"}, 150)
        assert final["state"] == "HISTORY", final["state_message"]
        assert started.read_text().count("started") == 2, "the killed postprocess ran again"
        names = sorted(sj["name"] for sj in final["subjobs"])
        assert names == ["child-a", "child-b", "spawns-0"], "each child added once"
        assert {sj["state"] for sj in final["subjobs"]} == {"JOB_FINISHED"}
        for sj in final["subjobs"]:
            workdir = dep.root / "sites" / "alpha" / "jobs" / str(sj["id"])
            ran, once = ("ran", "x") if sj["name"] == "spawns-0" else ("runs.log", "run\n")
            assert (workdir / ran).read_text() == once, f"{sj['name']} ran once"
