"""Backfill windows of PBS Pro, TORQUE and Cobalt, read from the fakes' ``pbsnodes``,
``qstat -B`` and ``nodelist`` (tests/fakes/pbs, tests/fakes/cobalt: real commands on PATH
printing the formats of OpenPBS 22.05, TORQUE 6.1 and Theta's Cobalt), on a fake machine of
four nodes, one of them running a batch job; and the pilot chosen to fit them."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from backends.backfill import Shape, Window, choose
from backends.backfill_probe import probe
from backends.runners.base import CommandResult
from backends.schedulers import Scheduler, scheduler_for
from backends.schedulers.base import BatchRequest
from backends.schedulers.cobalt import parse_nodelist
from backends.schedulers.pbs import parse_pro_server, parse_torque_server
from edgeceleryapp.errors import PermanentError, TransientError
from edgeceleryapp.settings import SiteSettings
from tests.fakes import engine as fake

FAKES = Path(__file__).parent / "fakes"
KINDS = {
    "pbs": ("pbs", {"FAKE_PBS_FLAVOR": "pbspro"}, "server pbsserver"),
    "torque": ("pbs", {"FAKE_PBS_FLAVOR": "torque"}, "server torqueserver"),
    "cobalt": ("cobalt", {}, "queue default"),
}
RUN_MINUTES = 30  # the running job's wall time


class Machine:
    """A fake scheduler of four nodes and the site's plug-in for it."""

    def __init__(self, kind: str, directory: Path, workdir: Path):
        self.kind, self.dir, self.workdir = kind, directory, workdir
        self.site = SiteSettings(scheduler=kind, workdir=workdir, command_timeout=20)
        self.plugin: Scheduler = scheduler_for(self.site)

    def submit(self, name: str) -> str:
        job = BatchRequest(
            name=name, workdir=self.workdir, argv=["sleep", "60"], wall_time_minutes=RUN_MINUTES
        )
        script = self.workdir / f"{name}.sh"
        script.write_text(self.plugin.render(job))
        return self.plugin.submit(script, job)

    def fault(self, **items: object) -> None:
        fake.set_faults(self.dir, **items)


@pytest.fixture(params=list(KINDS))
def machine(request, monkeypatch, tmp_path) -> Iterator[Machine]:
    family, extra_env, _ = KINDS[request.param]
    directory, workdir = tmp_path / "sched", tmp_path / "work"
    directory.mkdir()
    workdir.mkdir()
    path = os.pathsep.join([str(FAKES / family), str(Path(sys.executable).parent)])
    monkeypatch.setenv("PATH", path + os.pathsep + os.environ["PATH"])
    monkeypatch.setenv("FAKE_SCHED_DIR", str(directory))
    monkeypatch.setenv("FAKE_NODES", "4")
    monkeypatch.setenv("FAKE_MAX_WALLTIME", str(2 * 3600))
    for key, value in extra_env.items():
        monkeypatch.setenv(key, value)
    handle = Machine(request.param, directory, workdir)
    try:
        yield handle
    finally:
        fake.kill_all(directory)


def where(machine: Machine) -> str:
    return KINDS[machine.kind][2]


def test_idle_nodes_are_windows_and_the_pilot_chosen_fits_them(machine):
    machine.submit("running")
    windows = probe("site", machine.site, machine.plugin).windows
    # PBS: three free nodes up to the server's longest wall time; Cobalt: with nothing
    # waiting no node is drained, so the three idle ones have no known end.
    longest = None if machine.kind == "cobalt" else 7200.0
    assert windows == [Window(3, longest, where(machine))]
    choice = choose([Shape(4, 30), Shape(3, 120), Shape(2, 60)], windows, Shape(1, 10))
    assert choice.shape == Shape(3, 120)
    assert choice.reason.startswith("3 nodes x 120 min fits the backfill window of 3 nodes")


def test_a_waiting_job_shows_in_the_window(machine):
    machine.submit("running")
    machine.fault(hold_queue=True)
    machine.submit("waiting")
    (window,) = probe("site", machine.site, machine.plugin).windows
    assert window.nodes == 3
    if machine.kind == "cobalt":
        # Cobalt drains the idle nodes for the waiting job: they are free until the
        # running job's wall time ends.
        assert window.where == "queue default"
        assert RUN_MINUTES * 60 - 120 <= window.seconds <= RUN_MINUTES * 60
        fits = choose([Shape(3, 45), Shape(3, 20), Shape(1, 25)], [window], Shape(1, 10))
        assert fits.shape == Shape(3, 20), fits.reason
        assert "fits the backfill window of 3 nodes for 29 min on queue default" in fits.reason
    else:
        assert window.where == f"{where(machine)} (1 job queued)"
        assert window.seconds == 7200.0


def test_an_unreachable_server_is_a_transient_error_and_no_information(machine):
    machine.fault(unreachable=True)
    found = probe("site", machine.site, machine.plugin)
    assert found.windows is None
    assert isinstance(found.error, TransientError), found.error
    machine.fault(hang=["nodelist" if machine.kind == "cobalt" else "pbsnodes"])
    quick = SiteSettings(scheduler=machine.kind, workdir=machine.workdir, command_timeout=1)
    hung = probe("site", quick)  # the hung command is killed after a second
    machine.fault()
    assert hung.windows is None and isinstance(hung.error, TransientError), hung.error


def test_server_answers_read_in_both_dialects():
    pro = (
        '{"timestamp": 1, "pbs_version": "22.05.11", "pbs_server": "pbs01", "Server": '
        '{"pbs01": {"server_state": "Active", "state_count": "Transit:0 Queued:7 Held:0 '
        'Waiting:0 Running:2 Exiting:0 Begun:0 ", "resources_max": {"walltime": "48:00:00"}}}}'
    )
    assert parse_pro_server(pro) == ("pbs01", 172800.0, 7)
    torque = (
        "Server: torque01\n    server_state = Active\n    state_count = Transit:0 Queued:2 "
        "Held:0 Waiting:0 Running:1 Exiting:0 Complete:4 \n    scheduling = True\n"
    )
    assert parse_torque_server(torque) == ("torque01", None, 2)
    with pytest.raises(ValueError, match="no 'Server:' line"):
        parse_torque_server("qstat: nothing\n")


def test_nodelist_columns_are_found_by_name():
    text = (
        "Node_id  Name         Queues                  Status           MCDRAM  NUMA  Backfill\n"
        "=====================================================================================\n"
        "10       c0-0c0s2n2   default:debug-cache     idle             cache   quad  00:45:00\n"
        "11       c0-0c0s2n3   default                 idle             cache   quad  -\n"
        "12       c0-0c0s3n0   default                 cleanup-pending  cache   quad  -\n"
        "13       c0-0c0s3n1   default                 busy             cache   quad  -\n"
    )
    assert parse_nodelist(text) == {"default": [2700.0, None], "debug-cache": [2700.0]}
    with pytest.raises(ValueError, match="no 'backfill' column"):
        parse_nodelist("Node_id  Name  Queues  Status\n0  n0  default  idle\n")


def test_an_unreadable_nodelist_is_a_permanent_error(tmp_path):
    site = SiteSettings(scheduler="cobalt", workdir=tmp_path)
    plugin = scheduler_for(site)

    class Says:
        def run(self, argv, **_options):  # type: ignore[no-untyped-def]
            return CommandResult(tuple(argv), 0, "Host  State\nn0  idle\n", "")

    plugin.runner = Says()
    found = probe("theta", site, plugin)
    assert found.windows is None and isinstance(found.error, PermanentError)
    assert "cannot read nodelist's answer" in str(found.error)
