"""Backfill windows read from the real one-node Slurm (scripts/slurm.sh): the plug-in's own
``sinfo`` and ``squeue --start`` commands, their output as this machine's Slurm prints it.

A job held back for an hour (``--begin=now+3600``) is what the scheduler plans on the node:
it bounds how long the idle node stays free. The job never runs (cancelled at the end), and
before its begin time the scheduler reserves nothing for it, so other jobs on the cluster go
on as before. Other tests may use the cluster at the same time: assertions hold whatever
else is queued."""

from __future__ import annotations

import subprocess
import time

import pytest

from backends.backfill import Shape, choose
from backends.schedulers import scheduler_for
from backends.schedulers.slurm import parse_sinfo, parse_starts
from edgeceleryapp.settings import SiteSettings
from tests.helpers import start_service

pytestmark = pytest.mark.integration
HOUR = 3600.0
SLACK = 120.0  # seconds between our sbatch and the commands below, generously


@pytest.fixture(scope="module")
def slurm_conf() -> str:
    exported = start_service("slurm", timeout=600)
    return exported["SLURM_CONF"]


@pytest.fixture
def planned_in_an_hour(slurm_conf, monkeypatch, tmp_path):
    """The id of a one-node job the scheduler plans to start in an hour."""
    monkeypatch.setenv("SLURM_CONF", slurm_conf)
    argv = ["sbatch", "--parsable", "--begin=now+3600", "-p", "debug", "-N", "1"]
    argv += ["--exclusive", "-t", "10", "-J", f"ecbackfill{tmp_path.name}"[:40]]
    argv += ["-o", "/dev/null", "--wrap", "true"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    job_id = done.stdout.strip().split(";")[0]
    try:
        yield job_id
    finally:
        subprocess.run(["scancel", job_id], capture_output=True, timeout=60, check=False)


def test_real_sinfo_and_squeue_start_give_windows_bounded_by_the_planned_job(
    planned_in_an_hour, tmp_path
):
    plugin = scheduler_for(SiteSettings(scheduler="slurm", queue="debug", workdir=tmp_path))
    asked = time.time()
    sinfo, starts = (plugin.command(argv, "backfill") for argv in plugin.backfill_argvs())

    # Our job's line, as Slurm printed its planned start.
    ours = [line for line in starts.splitlines() if line.startswith(f"{planned_in_an_hour}|")]
    assert len(ours) == 1, starts
    alone = parse_starts(ours[0], asked)
    assert list(alone) == ["debug"]
    ((seconds, nodes),) = alone["debug"]
    assert nodes == 1
    assert HOUR - SLACK <= seconds <= HOUR + SLACK, ours[0]

    # The node: idle, or busy with other tests' jobs; the partition has no time limit.
    partitions = parse_sinfo(sinfo)
    assert list(partitions) == ["debug"], sinfo
    idle, limit = partitions["debug"]
    assert limit is None and idle in (0, 1), sinfo

    windows = plugin.parse_backfill([sinfo, starts], asked)
    if idle:
        assert windows, (sinfo, starts)
    for window in windows:
        assert window.where == "partition debug"
        assert window.nodes == 1
        assert window.seconds is not None and window.seconds <= HOUR + SLACK
    choice = choose([Shape(1, 30), Shape(1, 90)], windows, Shape(1, 15))
    if windows and windows[0].seconds >= 30 * 60:
        assert choice.shape == Shape(1, 30), choice.reason  # 90 min would overrun our job
        assert choice.reason.startswith("1 node x 30 min fits the backfill window of 1 node for")
    assert plugin.windows() is not None  # the same through the plug-in's own call
