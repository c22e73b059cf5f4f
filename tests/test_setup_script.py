"""scripts/setup.sh as a user who is not root: the demo needs only redis-server and setsid,
so only their absence stops it; what the tests need besides is named, not fatal."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TOOLS = ("dirname", "sha256sum", "cut", "rm", "touch", "redis-server", "setsid")


def run_setup(tmp_path: Path, *, without: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    """setup.sh with a PATH of only ``TOOLS`` (less ``without``) and an ``id`` that answers as
    user 1000: chromium and chromedriver are then missing, as on a desktop without them."""
    if not (ROOT / ".venv" / "bin" / "python").exists():
        pytest.fail("run scripts/setup.sh first", pytrace=False)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in TOOLS:
        if tool in without:
            continue
        found = shutil.which(tool)
        assert found, f"{tool} is installed by scripts/setup.sh"
        (bin_dir / tool).symlink_to(found)
    fake_id = bin_dir / "id"
    fake_id.write_text("#!/bin/sh\necho 1000\n")
    fake_id.chmod(0o755)
    return subprocess.run(
        ["/bin/bash", str(ROOT / "scripts" / "setup.sh")],
        env={**os.environ, "PATH": str(bin_dir)},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_missing_test_tools_are_named_but_do_not_stop_a_user(tmp_path):
    done = run_setup(tmp_path)
    assert done.returncode == 0, done.stderr
    assert "note: the tests also need" in done.stderr
    assert "chromium" in done.stderr
    assert "the demo and the service do not" in done.stderr


def test_missing_redis_stops_a_user_with_the_command_to_run(tmp_path):
    done = run_setup(tmp_path, without=("redis-server",))
    assert done.returncode == 1
    assert "missing: redis-server" in done.stderr
    assert "apt-get install redis-server" in done.stderr
