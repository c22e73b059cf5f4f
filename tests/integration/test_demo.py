"""``edgecelery demo`` through its real entry point: what it prints, and that a signal (SIGTERM
from systemd, ``timeout`` or ``kill``; SIGHUP from a closed terminal) stops every process it
started, as Ctrl-C does."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from edgeceleryapp.devstack import wait_for
from tests.helpers import descendants

pytestmark = pytest.mark.integration


def demo_env(tmp_path: Path) -> dict[str, str]:
    """No settings of the test session: the demo writes its own. TMPDIR keeps its folder
    inside the test's."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGECELERY_")}
    env["TMPDIR"] = str(tmp_path)
    return env


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_demo_without_serve_names_its_settings_and_no_dashboards(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "edgeceleryapp.cli", "demo", "--timeout", "90"],
        env=demo_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    settings = re.search(r"^settings file:\s+(\S+)$", out, re.M)
    assert settings and settings.group(1).endswith("edgecelery.toml")
    assert "ended in HISTORY" in out
    assert "job browser:" not in out and "password" not in out and "Flower:" not in out
    assert "run with --keep to keep it" in out
    assert not list(tmp_path.glob("edgecelery-demo-*")), "removed, as it said"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_demo_serve_stopped_by_a_signal_leaves_no_process_behind(tmp_path, sig):
    process = subprocess.Popen(
        [sys.executable, "-m", "edgeceleryapp.cli", "demo", "--serve", "--keep"],
        env=demo_env(tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    lines: list[str] = []

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.append(line)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    started: set[int] = set()
    try:
        wait_for(
            lambda: any("stay up" in line for line in lines) or process.poll() is not None,
            120,
            "the demo to finish its job and serve",
        )
        assert process.poll() is None, "".join(lines)
        out = "".join(lines)
        assert "job browser:" in out and "Flower:" in out
        started = descendants(process.pid)
        # Redis, the argo worker and two site workers (each with pool children), web, Flower.
        assert len(started) >= 6, started
        process.send_signal(sig)
        process.wait(60)
        wait_for(
            lambda: not [p for p in started if alive(p)],
            30,
            f"every process the demo started to stop (left: {[p for p in started if alive(p)]})",
        )
    finally:
        # A failed test must not leave its servers behind either.
        for pid in [process.pid, *started]:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
        process.wait(10)
        reader.join(10)
    out = "".join(lines)
    assert "kept " in out, out
