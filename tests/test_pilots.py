"""Pilots without a service: the sizer's choices and reasons, the packing of subjobs onto a
pilot's slots, the inbox's hand-off (claimed once, taken back once), and the launcher running
real processes from its inbox to their exit-code files, then ending when idle or stopped."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest

from backends.backfill import Window
from edgeceleryapp import pilot_inbox as inbox
from edgeceleryapp import pilot_slots as slots
from edgeceleryapp.db import session_scope
from edgeceleryapp.devstack import wait_for
from edgeceleryapp.errors import ConfigurationError
from edgeceleryapp.models import Pilot, utcnow
from edgeceleryapp.pilot_sizing import Limits, Plan, Waiting, size_pilot
from edgeceleryapp.settings import get_settings, load_settings, reset_settings
from tasks import pilots, poll
from tests.helpers import children_of

LIMITS = Limits(
    max_pilots=2,
    min_nodes=1,
    max_nodes=4,
    min_wall_minutes=10,
    max_wall_minutes=60,
    slots_per_node=8,
)


def test_no_pilot_without_waiting_work_or_when_free_slots_cover_it():
    assert size_pilot(Waiting(0, 0), 0, 0, LIMITS).plan is None
    covered = size_pilot(Waiting(5, 5), free_slots=8, active_pilots=1, limits=LIMITS)
    assert covered.plan is None and "free slots" in covered.reason


def test_no_pilot_past_max_pilots():
    decision = size_pilot(Waiting(100, 100), 0, 2, LIMITS)
    assert decision.plan is None and "max_pilots 2" in decision.reason


def test_sized_from_the_waiting_work_within_the_bounds():
    # 20 single-slot subjobs of 5 minutes: 3 nodes of 8 slots, 10 minutes (the minimum).
    small = size_pilot(Waiting(20, 20, 1, 5, 100), 0, 0, LIMITS)
    assert small.plan == Plan(3, 10) and "no backfill information" in small.reason
    # 1,000 of them: the most nodes (4), and the wall time their slot-minutes need (157 min),
    # cut to the maximum.
    big = size_pilot(Waiting(1000, 1000, 1, 5, 5000), 0, 0, LIMITS)
    assert big.plan == Plan(4, 60)
    # Free slots in a queued pilot count: 20 waiting, 16 free, 4 left: one node.
    assert size_pilot(Waiting(20, 20, 1, 5, 100), 16, 1, LIMITS).plan == Plan(1, 10)
    # A 3-node subjob needs a 3-node pilot even if slots alone would need fewer.
    assert size_pilot(Waiting(1, 24, 3, 20, 480), 0, 0, LIMITS).plan == Plan(3, 20)


def test_windows_cut_the_pilot_to_fit_or_are_named_when_none_fits():
    work = Waiting(32, 32, 1, 5, 1600)
    fit = size_pilot(work, 0, 0, LIMITS, [Window(2, 1800), Window(1, None)])
    assert fit.plan == Plan(2, 30)
    assert fit.reason.endswith("2 nodes x 30 min fits the backfill window of 2 nodes for 30 min")
    none = size_pilot(work, 0, 0, LIMITS, [Window(4, 120)])  # shorter than min_wall_minutes
    assert none.plan == Plan(4, 50) and "no candidate fits a backfill window" in none.reason
    unknown = size_pilot(work, 0, 0, LIMITS)
    assert unknown.plan == Plan(4, 50) and "no backfill information" in unknown.reason


def test_packing_single_node_subjobs_share_nodes_and_wide_ones_take_whole_nodes():
    assert slots.need_of(1, 3, 8) == slots.Need(1, 3)
    assert slots.need_of(1, 99, 8) == slots.Need(1, 8)
    assert slots.need_of(2, 1, 8) == slots.Need(2, 8)
    free = slots.free_after(2, 4, [slots.Need(1, 3), slots.Need(1, 2)])
    assert free == [1, 2]
    assert slots.place(free, slots.Need(2, 4), 4) is None  # no whole node left
    assert slots.place(free, slots.Need(1, 2), 4) == [1]
    assert slots.free_after(1, 4, [slots.Need(1, 3), slots.Need(1, 3)]) is None
    assert not slots.fits_at_all(slots.Need(3, 4), 2, 4)


def test_pilot_settings_are_checked_at_load(tmp_path):
    path = tmp_path / "edgecelery.toml"
    path.write_text(
        '[sites.c]\nworkdir = "/tmp/c"\n[sites.c.pilots]\nenabled = true\nmin_nodes = 4\n'
        "max_nodes = 2\n"
    )
    with pytest.raises(ConfigurationError, match="min_nodes 4 is above max_nodes 2"):
        load_settings(path, environ={})
    path.write_text('[sites.c]\nworkdir = "/tmp/c"\n[sites.c.pilots]\nslots_per_node = 0\n')
    with pytest.raises(ConfigurationError, match="slots_per_node"):
        load_settings(path, environ={})
    path.write_text('[sites.c]\nworkdir = "/tmp/c"\n')
    site = load_settings(path, environ={}).sites["c"]
    assert not site.pilots.enabled and "PILOT_ENDED" in site.resubmit_on


def _assignment(tmp_path: Path, sid: int, code: int, seconds: float = 0, attempt: int = 1):
    workdir = tmp_path / "jobs" / str(sid)
    workdir.mkdir(parents=True, exist_ok=True)
    program = (
        f"import time, sys; time.sleep({seconds}); open('ran', 'a').write('x'); sys.exit({code})"
    )
    return inbox.Assignment(sid, attempt, str(workdir), [sys.executable, "-c", program])


def test_inbox_claimed_once_and_taken_back_once(tmp_path):
    d = tmp_path / "p"
    inbox.create(d, inbox.PilotConfig(1, 1, 1, 600, 5))
    a = _assignment(tmp_path, 7, 0)
    assert inbox.post(d, a) and not inbox.post(d, a)  # a second post of the same attempt
    assert inbox.waiting(d) == ["7a1.json"]
    assert inbox.claim(d, "7a1.json") and not inbox.claim(d, "7a1.json")
    assert not inbox.take_back(d, "7a1.json")  # claimed: it may have run
    b = _assignment(tmp_path, 8, 0)
    inbox.post(d, b)
    assert inbox.take_back(d, "8a1.json") and not inbox.claim(d, "8a1.json")
    assert inbox.where(d, "8a1.json") == inbox.RETURNED


def _launcher(directory: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "edgeceleryapp.cli", "pilot", "run", str(directory)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_launcher_runs_its_inbox_on_its_slots_then_ends_when_idle(tmp_path):
    d = tmp_path / "p"
    inbox.create(
        d, inbox.PilotConfig(3, nodes=1, slots_per_node=2, wall_seconds=600, idle_exit_seconds=1.5)
    )
    jobs = [_assignment(tmp_path, i, i % 3, seconds=0.3) for i in range(1, 6)]
    for a in jobs:
        inbox.post(d, a)
    proc = _launcher(d)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "idle for 1 s" in out and inbox.ended(d) == "idle for 1 s"
    for a in jobs:
        workdir = Path(a.workdir)
        assert inbox.read_exit_code(workdir, 1) == a.subjob_id % 3
        assert (workdir / "ran").read_text() == "x"  # ran once
        assert inbox.where(d, a.name) == inbox.DONE
    assert inbox.heartbeat_time(d) is not None


def test_a_killed_launcher_takes_its_subjobs_with_it_and_writes_no_exit_code(tmp_path):
    d = tmp_path / "p"
    inbox.create(d, inbox.PilotConfig(4, 1, 1, 600, 60))
    a = _assignment(tmp_path, 9, 0, seconds=30)
    inbox.post(d, a)
    proc = _launcher(d)
    wait_for(lambda: inbox.where(d, a.name) == inbox.RUNNING, 20, "the claim")
    child = wait_for(lambda: min(children_of(proc.pid), default=None), 10, "the subjob's process")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    wait_for(lambda: not Path(f"/proc/{child}").exists() or _zombie(child), 10, "the subjob killed")
    assert inbox.read_exit_code(Path(a.workdir), 1) is None
    assert inbox.ended(d) is None


def test_a_killed_subjob_is_stopped_in_its_pilot_or_never_started(tmp_path):
    d = tmp_path / "p"
    inbox.create(d, inbox.PilotConfig(6, 1, 1, 600, 60))
    running = _assignment(tmp_path, 11, 0, seconds=30)
    inbox.post(d, running)
    proc = _launcher(d)
    try:
        wait_for(lambda: inbox.where(d, running.name) == inbox.RUNNING, 20, "the claim")
        child = wait_for(
            lambda: min(children_of(proc.pid), default=None), 10, "the subjob's process"
        )
        assert not inbox.cancel(d, running.name), "it had started"
        wait_for(lambda: inbox.where(d, running.name) == inbox.DONE, 10, "the run stopped")
        assert inbox.read_exit_code(Path(running.workdir), 1) == 137  # SIGKILL, as a shell says
        assert not Path(f"/proc/{child}").exists() or _zombie(child)
        # The one slot is free again; a killed subjob still in the inbox is taken back unrun.
        waiting = _assignment(tmp_path, 12, 0, seconds=30)
        assert inbox.cancel(d, waiting.name) is False, "not posted yet: nothing to take back"
        inbox.post(d, waiting)
        wait_for(lambda: inbox.where(d, waiting.name) == inbox.DONE, 10, "the claim and stop")
        assert not (Path(waiting.workdir) / "ran").exists(), "a cancelled assignment never runs"
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=20)
    # With no launcher to claim it, the worker takes the killed subjob's assignment back.
    idle = tmp_path / "idle"
    inbox.create(idle, inbox.PilotConfig(7, 1, 1, 600, 60))
    unclaimed = _assignment(tmp_path, 13, 0)
    inbox.post(idle, unclaimed)
    assert inbox.cancel(idle, unclaimed.name) and inbox.where(idle, unclaimed.name) == "returned"


def test_a_run_signalled_with_its_pilot_at_the_wall_time_is_not_failed(tmp_path):
    """Slurm's time limit sends SIGTERM to every process of the allocation; here the run
    gets it a moment before the launcher. Its death is the pilot's end (a new attempt), not
    the application's exit code 143. A run killed by a signal while its pilot goes on is
    the application's death, recorded after the grace."""
    d = tmp_path / "p"
    inbox.create(d, inbox.PilotConfig(8, 1, 2, 600, 60))
    at_wall_time, on_its_own = (_assignment(tmp_path, i, 0, seconds=30) for i in (14, 15))
    inbox.post(d, at_wall_time)
    proc = _launcher(d)
    try:
        wait_for(lambda: inbox.where(d, at_wall_time.name) == inbox.RUNNING, 20, "the claim")
        first = wait_for(lambda: min(children_of(proc.pid), default=None), 10, "its process")
        os.kill(first, signal.SIGTERM)
        time.sleep(0.1)  # the fault as Slurm may make it: the launcher signalled 0.1 s later
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=20)
        assert inbox.read_exit_code(Path(at_wall_time.workdir), 1) is None
        assert inbox.ended(d) == "stopped by signal SIGTERM"
        again = tmp_path / "q"
        inbox.create(again, inbox.PilotConfig(9, 1, 1, 600, 60))
        inbox.post(again, on_its_own)
        proc = _launcher(again)
        wait_for(lambda: inbox.where(again, on_its_own.name) == inbox.RUNNING, 20, "the claim")
        second = wait_for(lambda: min(children_of(proc.pid), default=None), 10, "its process")
        os.kill(second, signal.SIGTERM)
        wait_for(lambda: inbox.where(again, on_its_own.name) == inbox.DONE, 10, "the grace")
        assert inbox.read_exit_code(Path(on_its_own.workdir), 1) == 143
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.communicate(timeout=20)


def test_a_stopped_launcher_says_why(tmp_path):
    d = tmp_path / "p"
    inbox.create(d, inbox.PilotConfig(5, 1, 1, 600, 60))
    proc = _launcher(d)
    wait_for(lambda: inbox.heartbeat_time(d) is not None, 20, "the first heartbeat")
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=20)
    assert inbox.ended(d) == "stopped by signal SIGTERM"


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def test_assignment_round_trips_as_json(tmp_path):
    a = _assignment(tmp_path, 11, 0)
    d = tmp_path / "p"
    inbox.create(d, inbox.PilotConfig(6, 1, 1, 600, 60))
    inbox.post(d, a)
    assert inbox.read(d, inbox.INBOX, a.name) == a
    assert json.loads((d / inbox.CONFIG).read_text())["pilot_id"] == 6


# The site worker's side of a pilot whose submission was never recorded.


def _unrecorded_pilot(env, heartbeat: bool = False) -> tuple[int, str]:
    """A pilot the scheduler accepted, then its worker died before recording the batch job:
    its id and the batch job's. Site alpha runs pilots whose batch jobs run no launcher
    (``/bin/true``): only the test says whether one was heard."""
    if "[sites.alpha.pilots]" not in env.config.read_text():
        with env.config.open("a") as fh:
            fh.write('\n[sites.alpha.pilots]\nenabled = true\ncommand = ["/bin/true"]\n')
        reset_settings()
    site = get_settings().site("alpha")
    pilot_id = pilots.submit_pilot("alpha", site, Plan(1, 5), "test")
    with session_scope() as s:
        record = s.get(Pilot, pilot_id)
        batch_id = record.batch_job_id
        record.batch_job_id = None
        if heartbeat:
            inbox.beat(Path(record.directory))
    return pilot_id, batch_id


def _pilot(pilot_id: int) -> Pilot:
    with session_scope() as s:
        return s.get(Pilot, pilot_id)


def test_a_pilot_whose_submission_was_not_recorded_is_found_by_name(env):
    """The site has no subjob in flight and no other pilot: the tick asks the scheduler for
    this one's sake, finds it by name, and from then on follows it as any pilot."""
    pilot_id, batch_id = _unrecorded_pilot(env)

    def recorded() -> str | None:
        poll.poll_site("alpha")
        return _pilot(pilot_id).batch_job_id

    assert wait_for(recorded, 20, "the tick to find the pilot by name", 0.05) == batch_id
    assert _pilot(pilot_id).state == "QUEUED"

    def ended() -> Pilot | None:
        poll.poll_site("alpha")
        found = _pilot(pilot_id)
        return found if found.state == "ENDED" else None

    reason = wait_for(ended, 20, "its batch job's end to be seen", 0.05).end_reason
    assert reason == f"its batch job {batch_id} ended: ended"


@pytest.mark.parametrize("look", ["answered", "failed"])
def test_a_pilot_never_submitted_ends_unless_its_launcher_is_heard(env, monkeypatch, look):
    """Past lost_after, a pilot the scheduler knows no batch job of ends, unless its launcher
    beats; when the scheduler cannot be asked, nothing is decided."""
    silent, _ = _unrecorded_pilot(env)
    heard, _ = _unrecorded_pilot(env, heartbeat=True)
    answer = (look == "answered", None)
    monkeypatch.setattr(pilots, "_found_by_name", lambda _site, _pilot: answer)
    later = utcnow() + timedelta(seconds=get_settings().site("alpha").lost_after + 1)
    monkeypatch.setattr(pilots, "utcnow", lambda: later)

    def followed() -> bool:  # the tick that saw the heard one's beat decided the silent one
        poll.poll_site("alpha")
        return _pilot(heard).state == "RUNNING"

    wait_for(followed, 20, "a tick that follows the pilots", 0.05)
    if look == "answered":
        assert (_pilot(silent).state, _pilot(silent).end_reason) == (
            "ENDED",
            "its batch job was never submitted",
        )
    else:
        assert _pilot(silent).state == "QUEUED"
    assert _pilot(heard).state == "RUNNING", "its launcher beats: it runs"
