"""Pilots on the project's real one-node Slurm (scripts/slurm.sh): subjobs through pilot
batch jobs (a few sbatch calls for many subjobs); a pilot SIGKILLed mid-run, and a pilot that
Slurm stops at its wall time (one minute, the shortest Slurm grants, so this test takes about
as long): every subjob completes exactly once. One deployment for the module."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from edgeceleryapp import applications
from edgeceleryapp.devstack import wait_for
from tests.helpers import script
from tests.integration.conftest import running_deployment
from tests.integration.pilots_common import (
    APP,
    all_finished,
    assert_each_completed_once,
    pilot,
    resubmitted,
    running_pilot,
    submit,
)
from tests.integration.test_slurm import write_shims

pytestmark = pytest.mark.integration
PILOTS = {
    "enabled": True,
    "max_pilots": 1,
    "slots_per_node": 4,
    "min_wall_minutes": 1,
    "max_wall_minutes": 1,
    "idle_exit_seconds": 2.0,
    "heartbeat_timeout": 20.0,
}


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    from tests.helpers import start_service

    slurm_conf = start_service("slurm", timeout=600)["SLURM_CONF"]
    root = tmp_path_factory.mktemp("pilots-slurm")
    shims = write_shims(root / "shims")
    env = {
        "SLURM_CONF": slurm_conf,
        "SHIM_DIR": str(shims),
        "PATH": f"{shims}:{os.environ['PATH']}",
    }
    sites = {
        "cluster": {
            "scheduler": "slurm",
            "queue": "debug",
            "accounting": True,
            "pilots": PILOTS,
        }
    }
    with running_deployment(root, ("cluster",), sites, env_extra=env) as dep:
        dep.shims = shims
        dep.site_root = root / "sites" / "cluster"
        dep.gate = root / "gate"
        exe = script(root / "apps" / "work.py", APP)
        applications.add_app("work", "cluster", exe)
        # The same program waiting for the gate file: it runs until the test opens the gate.
        gated = root / "apps" / "gated.sh"
        gated.write_text(f'#!/bin/sh\nexec "{exe}" "{dep.gate}"\n')
        gated.chmod(0o755)
        applications.add_app("gated", "cluster", str(gated))
        yield dep


def sbatch_calls(dep) -> int:
    log = dep.shims / "calls.log"
    lines = log.read_text().splitlines() if log.exists() else []
    return sum(1 for line in lines if line.split()[1] == "sbatch")


def test_subjobs_through_one_pilot_and_a_pilot_sigkilled_mid_run(slurm):
    before = sbatch_calls(slurm)
    ids = submit("cluster", "work", "a", 12)
    victim = wait_for(lambda: running_pilot(ids), 120, "a subjob running in a pilot", 0.1)
    os.kill(int((Path(victim.directory) / "launcher.pid").read_text()), signal.SIGKILL)
    wait_for(lambda: all_finished(ids), 180, "every subjob to finish", interval=0.5)
    assert_each_completed_once(slurm.site_root, ids)
    assert pilot(victim.id).state == "ENDED"
    assert resubmitted(ids), "the killed pilot's running subjobs were resubmitted"
    calls = sbatch_calls(slurm) - before
    assert calls <= 3, f"{calls} sbatch calls for 12 subjobs"


def test_a_pilot_stopped_by_slurm_at_its_wall_time(slurm):
    slurm.gate.unlink(missing_ok=True)
    ids = submit("cluster", "gated", "w", 3)
    victim = wait_for(lambda: running_pilot(ids), 120, "a subjob running in a pilot", 0.1)
    wait_for(lambda: pilot(victim.id).state == "ENDED", 150, "Slurm to end the pilot", 0.5)
    slurm.gate.touch()
    wait_for(lambda: all_finished(ids), 180, "every subjob to finish", interval=0.5)
    assert_each_completed_once(slurm.site_root, ids)
    reason = pilot(victim.id).end_reason
    assert "SIGTERM" in reason or "TIMEOUT" in reason, reason
    assert resubmitted(ids)
