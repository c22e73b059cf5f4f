"""Pilots through real workers on the PBS fake (tests/fakes/pbs, PBS Pro's commands and
output): subjobs run inside pilot batch jobs; a pilot SIGKILLed mid-run and a pilot stopped
at its wall time give their unfinished subjobs back, and every subjob completes exactly once.
One deployment for the module."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import pytest
from sqlalchemy import func, select

from edgeceleryapp import applications
from edgeceleryapp.db import read_scope
from edgeceleryapp.devstack import wait_for
from edgeceleryapp.models import Pilot, SubJob
from tests.fakes import engine as fake
from tests.helpers import script
from tests.integration.conftest import running_deployment

pytestmark = pytest.mark.integration
FAKES = Path(__file__).parents[1] / "fakes"
PILOTS = {
    "enabled": True,
    "max_pilots": 1,
    "max_nodes": 1,
    "slots_per_node": 3,
    "min_wall_minutes": 10,
    "idle_exit_seconds": 2.0,
    "heartbeat_timeout": 10.0,
}
# Each run notes its start; a run that completes notes its end: killed runs leave a start only.
APP = (
    "import time\n"
    "open('starts', 'a').write('s\\n')\n"
    "time.sleep(1.5)\n"
    "open('ends', 'a').write('e\\n')\n"
)


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
            applications.add_app("work", "pbs", script(root / "apps" / "work.py", APP))
            yield dep
    finally:
        fake.kill_all(sched)


def submit(dep, prefix: str, n: int) -> list[int]:
    from workflows.intake import submit_balsam

    return [
        submit_balsam({"name": f"{prefix}{i}", "site": "pbs", "application": "work"})
        for i in range(n)
    ]


def states_of(ids: list[int]) -> dict[str, int]:
    with read_scope() as s:
        rows = s.execute(
            select(SubJob.state, func.count()).where(SubJob.id.in_(ids)).group_by(SubJob.state)
        ).all()
    return dict(rows)


def all_finished(ids: list[int]) -> bool:
    now = states_of(ids)
    assert not any(k.endswith("_FAILED") for k in now), now
    return now.get("JOB_FINISHED", 0) == len(ids)


def pilots() -> list[Pilot]:
    with read_scope() as s:
        return list(s.scalars(select(Pilot).order_by(Pilot.id)))


def running_pilot() -> Pilot | None:
    """A pilot with a subjob running in it."""
    with read_scope() as s:
        row = s.execute(
            select(Pilot)
            .join(SubJob, SubJob.pilot_id == Pilot.id)
            .where(Pilot.state == "RUNNING", SubJob.state == "RUNNING")
        ).first()
    return row[0] if row else None


def assert_each_completed_once(dep, ids: list[int]) -> None:
    for sid in ids:
        workdir = dep.root / "sites" / "pbs" / "jobs" / str(sid)
        assert (workdir / "ends").read_text() == "e\n", f"subjob {sid} completed once"


def test_subjobs_run_in_few_pilots_and_operators_see_them(pbs):
    ids = submit(pbs, "a", 7)
    wait_for(lambda: all_finished(ids), 120, "7 subjobs through pilots", interval=0.3)
    assert_each_completed_once(pbs, ids)
    submitted = fake.load(pbs.sched)["submissions"]
    assert submitted <= 2, f"{submitted} batch jobs for 7 subjobs"
    with read_scope() as s:
        first = s.get(SubJob, ids[0])
        pilot_id = first.pilot_id
    assert pilot_id is not None and first.batch_job_id is None
    shown = pbs.cli("job", "show", str(ids[0]))
    assert f"ran in               pilot {pilot_id} (batch job " in shown, shown
    site = pbs.cli("site", "show", "pbs")
    assert "pilots:" in site and f"pilot {pilot_id} " in site, site


def test_a_pilot_sigkilled_mid_run_gives_back_its_subjobs(pbs):
    ids = submit(pbs, "k", 5)
    pilot = wait_for(running_pilot, 60, "a subjob running in a pilot", interval=0.1)
    pid = int((Path(pilot.directory) / "launcher.pid").read_text())
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: all_finished(ids), 120, "every subjob to finish", interval=0.3)
    assert_each_completed_once(pbs, ids)
    ended = next(p for p in pilots() if p.id == pilot.id)
    assert ended.state == "ENDED" and "batch job" in ended.end_reason, ended.end_reason
    with read_scope() as s:
        again = s.scalars(select(SubJob).where(SubJob.id.in_(ids), SubJob.attempt == 2)).all()
    assert again, "the killed pilot's running subjobs were resubmitted"
    assert all(sj.pilot_id != pilot.id for sj in again)


def test_a_pilot_at_its_wall_time_gives_back_its_subjobs(pbs):
    ids = submit(pbs, "w", 5)
    pilot = wait_for(running_pilot, 60, "a subjob running in a pilot", interval=0.1)
    fake.set_faults(pbs.sched, timeout=True)  # the server kills it: walltime exceeded
    try:
        wait_for(
            lambda: next(p for p in pilots() if p.id == pilot.id).state == "ENDED",
            60,
            "the pilot to be seen ended",
            interval=0.2,
        )
    finally:
        fake.set_faults(pbs.sched)
    wait_for(lambda: all_finished(ids), 120, "every subjob to finish", interval=0.3)
    assert_each_completed_once(pbs, ids)
    ended = next(p for p in pilots() if p.id == pilot.id)
    assert "TIMEOUT" in ended.end_reason or "walltime" in ended.end_reason, ended.end_reason
