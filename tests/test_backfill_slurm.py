"""Slurm's backfill windows from ``sinfo`` and ``squeue --start`` (fixed samples of a
multi-node cluster, in the formats Slurm 22.05 prints for the plug-in's ``-o`` strings; the
real one-node cluster's own output is read in tests/integration/test_backfill_slurm.py), and
asking a site's scheduler through its runner (backends/backfill_probe.py)."""

from __future__ import annotations

from datetime import datetime

import pytest

from backends.backfill import Shape, Window, choose
from backends.backfill_probe import probe
from backends.runners.base import CommandResult
from backends.schedulers import scheduler_for
from backends.schedulers.slurm import parse_sinfo, parse_starts, slurm_windows, time_limit
from edgeceleryapp.errors import PermanentError, TransientError
from edgeceleryapp.settings import SiteSettings

NOW = datetime.fromisoformat("2026-12-02T06:00:00").timestamp()
# sinfo -h -o "%R|%a|%D|%t|%l" on a cluster with three partitions.
SINFO = """\
debug|up|2|idle|30:00
debug|up|2|alloc|30:00
batch|up|10|idle|1-00:00:00
batch|up|4|mix|1-00:00:00
batch|up|1|idle*|1-00:00:00
batch|up|1|idle~|1-00:00:00
batch|up|2|drain|1-00:00:00
long|down|8|idle|7-00:00:00
"""
# squeue --start -h -o "%i|%P|%S|%D": the backfill plan, one job planned in two partitions.
STARTS = """\
1201|batch|2026-12-02T07:00:00|4
1202|batch|2026-12-02T08:00:00|6
1203|batch,debug|2026-12-02T06:20:00|1
1204|batch|N/A|2
"""


def test_time_limits_read_as_slurm_prints_them():
    assert [time_limit(t) for t in ("infinite", "30:00", "1:00:00", "1-00:00:00")] == [
        None,
        1800.0,
        3600.0,
        86400.0,
    ]
    with pytest.raises(ValueError, match="not a Slurm time limit"):
        time_limit("soon")


def test_only_plainly_idle_nodes_of_partitions_up_count():
    assert parse_sinfo(SINFO) == {
        "debug": (2, 1800.0),
        "batch": (10, 86400.0),
        "long": (0, 604800.0),
    }


def test_planned_starts_claim_nodes_in_each_partition_named():
    assert parse_starts(STARTS, NOW) == {
        "batch": [(3600.0, 4), (7200.0, 6), (1200.0, 1)],
        "debug": [(1200.0, 1)],
    }
    assert parse_starts("1|debug|1796187600|2\n", 1796187000.0) == {"debug": [(600.0, 2)]}


def test_the_windows_of_a_busy_cluster_and_the_pilot_that_fits_them():
    windows = slurm_windows(SINFO, STARTS, NOW)
    assert windows == [
        Window(2, 1200.0, "partition debug"),
        Window(1, 1800.0, "partition debug"),
        Window(10, 1200.0, "partition batch"),
        Window(9, 3600.0, "partition batch"),
        Window(5, 7200.0, "partition batch"),
    ]
    choice = choose(
        [Shape(5, 100), Shape(9, 60), Shape(2, 25), Shape(12, 10)], windows, Shape(1, 30)
    )
    assert choice.shape == Shape(9, 60)
    assert (
        choice.reason
        == "9 nodes x 60 min fits the backfill window of 9 nodes for 60 min on partition batch"
    )


class Canned:
    """A runner that answers each command by its program's name."""

    def __init__(self, **answers: tuple[int, str, str]):
        self.answers = answers
        self.asked: list[tuple[str, ...]] = []

    def run(self, argv, **_options) -> CommandResult:  # type: ignore[no-untyped-def]
        self.asked.append(tuple(argv))
        code, out, err = self.answers[argv[0]]
        return CommandResult(tuple(argv), code, out, err)


def slurm_site(tmp_path, **extra) -> SiteSettings:  # type: ignore[no-untyped-def]
    return SiteSettings(scheduler="slurm", workdir=tmp_path, **extra)


def test_the_plugin_asks_both_commands_for_the_sites_partition(tmp_path):
    plugin = scheduler_for(slurm_site(tmp_path, queue="batch"))
    plugin.runner = Canned(sinfo=(0, SINFO, ""), squeue=(0, "", ""))
    found = probe("cluster", slurm_site(tmp_path), plugin)
    assert found.error is None
    assert Window(10, 86400.0, "partition batch") in found.windows
    assert plugin.runner.asked == [
        ("sinfo", "-h", "-p", "batch", "-o", "%R|%a|%D|%t|%l"),
        ("squeue", "--start", "-h", "-p", "batch", "-o", "%i|%P|%S|%D"),
    ]


def test_a_failed_question_is_typed_and_gives_no_information(tmp_path):
    plugin = scheduler_for(slurm_site(tmp_path))
    down = "sinfo: error: Unable to contact slurm controller (connect failure)"
    plugin.runner = Canned(sinfo=(1, "", down), squeue=(0, "", ""))
    found = probe("cluster", slurm_site(tmp_path), plugin)
    assert found.windows is None
    assert isinstance(found.error, TransientError)
    assert "unable to contact slurm controller" in str(found.error).lower()
    plugin.runner = Canned(sinfo=(0, "debug|up|1|idle|whenever\n", ""), squeue=(0, "", ""))
    garbled = probe("cluster", slurm_site(tmp_path), plugin)
    assert garbled.windows is None
    assert isinstance(garbled.error, PermanentError)
    assert "cannot read sinfo's answer" in str(garbled.error)


@pytest.mark.parametrize("kind", ["local", "condor", "lsf", "sge"])
def test_schedulers_that_cannot_say_give_no_information(kind, tmp_path):
    site = SiteSettings(scheduler=kind, workdir=tmp_path)
    plugin = scheduler_for(site)
    plugin.runner = Canned()  # asked anything, it would fail with KeyError
    assert probe("s", site, plugin).windows is None
    assert plugin.runner.asked == []
