"""Pilots through real workers on the PBS fake (tests/fakes/pbs, PBS Pro's commands and
output): subjobs run inside pilot batch jobs; a pilot SIGKILLed mid-run and a pilot killed by
the server at its wall time give their unfinished subjobs back, and every subjob completes
exactly once. One deployment for the module."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import pytest

from edgeceleryapp import applications
from edgeceleryapp import pilot_inbox as inbox
from edgeceleryapp.db import read_scope
from edgeceleryapp.devstack import wait_for
from edgeceleryapp.models import SiteMonitor, SubJob
from tests.fakes import engine as fake
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

pytestmark = pytest.mark.integration
FAKES = Path(__file__).parents[1] / "fakes"
PILOTS = {
    "enabled": True,
    "max_pilots": 1,
    "slots_per_node": 3,
    "idle_exit_seconds": 2.0,
    "heartbeat_timeout": 10.0,
}


@pytest.fixture(scope="module")
def pbs(tmp_path_factory):
    root = tmp_path_factory.mktemp("pilots-pbs")
    sched = root / "sched"
    sched.mkdir()
    env = {
        "PATH": os.pathsep.join([str(FAKES / "pbs"), str(Path(sys.executable).parent)])
        + os.pathsep
        + os.environ["PATH"],
        "FAKE_SCHED_DIR": str(sched),
        "FAKE_PBS_FLAVOR": "pbspro",
        "FAKE_END_LATENCY": "0.2",
    }
    sites = {"pbs": {"scheduler": "pbs", "queue": "debug", "pilots": PILOTS}}
    try:
        with running_deployment(root, ("pbs",), sites, env_extra=env) as dep:
            dep.sched = sched
            dep.site_root = root / "sites" / "pbs"
            exe = script(root / "apps" / "work.py", APP)
            applications.add_app("work", "pbs", exe)
            # The same program waiting for the gate file: it runs until the test opens the
            # gate, so a kill lands while a subjob runs, whatever the machine's speed.
            dep.gate = root / "gate"
            gated = root / "apps" / "gated.sh"
            gated.write_text(f'#!/bin/sh\nexec "{exe}" "{dep.gate}"\n')
            gated.chmod(0o755)
            applications.add_app("gated", "pbs", str(gated))
            yield dep
    finally:
        fake.kill_all(sched)


def test_subjobs_run_in_few_pilots_and_operators_see_them(pbs):
    ids = submit("pbs", "work", "a", 7)
    wait_for(lambda: all_finished(ids), 120, "7 subjobs through pilots", interval=0.3)
    assert_each_completed_once(pbs.site_root, ids)
    submitted = fake.load(pbs.sched)["submissions"]
    assert submitted <= 2, f"{submitted} batch jobs for 7 subjobs"
    with read_scope() as s:
        first = s.get(SubJob, ids[0])
        pilot_id = first.pilot_id
        monitor = s.get(SiteMonitor, "pbs")
    assert pilot_id is not None and first.batch_job_id is None
    # The windows asked for when the pilot was sized, kept for the choice among sites less
    # the nodes the pilot took (often all of the fake's idle ones: an empty list).
    assert monitor.backfill_at is not None and monitor.backfill_windows is not None
    shown = pbs.cli("job", "show", str(ids[0]))
    assert f"ran in               pilot {pilot_id} (batch job " in shown, shown
    site = pbs.cli("site", "show", "pbs")
    assert "pilots:" in site and f"pilot {pilot_id} " in site, site


def test_a_pilot_sigkilled_mid_run_gives_back_its_subjobs(pbs):
    pbs.gate.unlink(missing_ok=True)
    ids = submit("pbs", "gated", "k", 5)
    victim = wait_for(lambda: running_pilot(ids), 60, "a subjob running in a pilot", 0.1)
    os.kill(int((Path(victim.directory) / "launcher.pid").read_text()), signal.SIGKILL)
    wait_for(lambda: pilot(victim.id).state == "ENDED", 60, "the pilot seen ended", 0.2)
    pbs.gate.touch()
    wait_for(lambda: all_finished(ids), 120, "every subjob to finish", interval=0.3)
    assert_each_completed_once(pbs.site_root, ids)
    ended = pilot(victim.id)
    assert ended.state == "ENDED" and "batch job" in ended.end_reason, ended.end_reason
    again = resubmitted(ids)
    assert again, "the killed pilot's running subjobs were resubmitted"
    assert all(sj.pilot_id != victim.id for sj in again)


def test_a_pilot_at_its_wall_time_gives_back_its_subjobs(pbs):
    pbs.gate.unlink(missing_ok=True)
    ids = submit("pbs", "gated", "w", 5)
    victim = wait_for(lambda: running_pilot(ids), 60, "a subjob running in a pilot", 0.1)
    fake.set_faults(pbs.sched, timeout=True)  # the server kills it: walltime exceeded
    try:
        wait_for(lambda: pilot(victim.id).state == "ENDED", 60, "the pilot seen ended", 0.2)
    finally:
        fake.set_faults(pbs.sched)
    pbs.gate.touch()
    wait_for(lambda: all_finished(ids), 120, "every subjob to finish", interval=0.3)
    assert_each_completed_once(pbs.site_root, ids)
    assert "TIMEOUT" in pilot(victim.id).end_reason, pilot(victim.id).end_reason
    assert resubmitted(ids)


def test_a_subjob_killed_while_it_runs_in_a_pilot_is_stopped_there(pbs):
    pbs.gate.unlink(missing_ok=True)
    [sid] = submit("pbs", "gated", "x", 1)
    wait_for(lambda: running_pilot([sid]), 60, "the subjob running in a pilot", 0.1)
    pbs.cli("job", "kill", str(sid))
    workdir = pbs.site_root / "jobs" / str(sid)
    code = wait_for(lambda: inbox.read_exit_code(workdir, 1), 30, "the run stopped", 0.1)
    assert code == 137  # killed by SIGKILL in the pilot, not left to run to its end
    pbs.gate.touch()
    with read_scope() as s:
        assert s.get(SubJob, sid).state == "KILLED"
    assert not (workdir / "ends").exists()
