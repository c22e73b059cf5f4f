"""Slurm: sbatch, squeue, scancel (and sacct where the site has accounting).

One status command per tick: ``squeue --states=all`` shows pending, running and recently ended
jobs (kept for the controller's MinJobAge); at a site with ``accounting = true`` the plug-in
asks ``sacct`` instead, which remembers every job. Formats
are those of Slurm 22.05 (Debian 12), unchanged since 20.11.

Backfill windows: ``sinfo`` gives the idle nodes of each partition and its time limit,
``squeue --start`` when the scheduler expects each pending job to start (its backfill plan);
a pending job is assumed to take idle nodes at its expected start, which bounds how long
they stay free. Both with ``-h -o`` formats, fields split on "|"; start times are printed in
the login node's local time (as on this machine's Slurm 22.05.8; ``SLURM_TIME_FORMAT=%s``
epoch seconds are read too).
"""

from __future__ import annotations

import re
from datetime import datetime

from backends import backfill
from backends.backfill import Window
from backends.schedulers.base import BatchScheduler, BatchStatus, Cause, State

# The controller's own words for a passing condition (slurm/src/common/slurm_errno.c).
TRANSIENT = (
    "socket timed out",
    "unable to contact slurm controller",
    "temporarily unavailable",
    "slurm temporarily unable",
    "try again",
    "connection refused",
    "zero bytes were transmitted",
    "resource temporarily unavailable",
)

QUEUED, RUNNING = (State.QUEUED, ""), (State.RUNNING, "")
STATES: dict[str, tuple[str, str]] = {
    "PENDING": QUEUED,
    "CONFIGURING": QUEUED,
    "REQUEUED": QUEUED,
    "REQUEUE_HOLD": QUEUED,
    "REQUEUE_FED": QUEUED,
    "RESV_DEL_HOLD": QUEUED,
    "RUNNING": RUNNING,
    "COMPLETING": RUNNING,
    "STAGE_OUT": RUNNING,
    "SUSPENDED": RUNNING,
    "SIGNALING": RUNNING,
    "RESIZING": RUNNING,
    "COMPLETED": (State.FINISHED, ""),
    "FAILED": (State.FINISHED, ""),
    "CANCELLED": (State.FAILED, Cause.CANCELLED),
    "TIMEOUT": (State.FAILED, Cause.TIMEOUT),
    "DEADLINE": (State.FAILED, Cause.TIMEOUT),
    "NODE_FAIL": (State.FAILED, Cause.NODE_FAIL),
    "BOOT_FAIL": (State.FAILED, Cause.BOOT_FAIL),
    "PREEMPTED": (State.FAILED, Cause.PREEMPTED),
    "OUT_OF_MEMORY": (State.FAILED, Cause.OUT_OF_MEMORY),
    "SPECIAL_EXIT": (State.FAILED, ""),
    "REVOKED": (State.FAILED, Cause.CANCELLED),
}

SQUEUE_FORMAT = "%i|%j|%T|%r"
SACCT_FIELDS = "JobIDRaw,JobName,State,ExitCode"
SINFO_FORMAT = "%R|%a|%D|%t|%l"  # partition, up/down, nodes, compact state, time limit
START_FORMAT = "%i|%P|%S|%D"  # job, partition(s), expected start, nodes
TIME_LIMIT = re.compile(r"^(?:(\d+)-)?(?:(\d+):)??(?:(\d+):)?(\d+)$")


def parse_state(text: str) -> tuple[str, str]:
    """``CANCELLED by 0`` and ``RUNNING`` alike; unknown states count as queued, not done."""
    word = text.split()[0] if text.strip() else ""
    return STATES.get(word, QUEUED)


def parse_squeue(output: str) -> dict[str, BatchStatus]:
    out: dict[str, BatchStatus] = {}
    for line in output.splitlines():
        parts = line.strip().split("|")
        if len(parts) < 4:
            continue
        job_id, _name, state, reason = parts[:4]
        ours, cause = parse_state(state)
        note = "" if reason in ("None", "") else reason
        out[job_id] = BatchStatus(
            ours, None, f"slurm: {state}" + (f" ({note})" if note else ""), cause
        )
    return out


def parse_sacct(output: str) -> dict[str, BatchStatus]:
    out: dict[str, BatchStatus] = {}
    for line in output.splitlines():
        parts = line.strip().split("|")
        if len(parts) < 4 or "." in parts[0]:
            continue
        job_id, _name, state, exit_code = parts[:4]
        ours, cause = parse_state(state)
        code = _exit_code(exit_code) if ours in (State.FINISHED, State.FAILED) else None
        out[job_id] = BatchStatus(ours, code, f"slurm: {state}", cause)
    return out


def _exit_code(text: str) -> int | None:
    """sacct's ExitCode is ``code:signal``."""
    code, _, _signal = text.partition(":")
    return int(code) if code.isdigit() else None


class SlurmScheduler(BatchScheduler):
    kind = "slurm"
    prefix = "#SBATCH"
    template = (
        "--job-name={name}",
        "--chdir={workdir}",
        "--output={out}",
        "--error={err}",
        "--nodes={nodes}",
        "--ntasks-per-node={ppn}",
    )
    optional = (
        ("queue", "--partition={queue}"),
        ("project", "--account={project}"),
        ("minutes", "--time={minutes}"),
    )
    transient = TRANSIENT
    submit_command = ("sbatch", "--parsable")
    cancel_command = ("scancel",)

    def parse_submit(self, output: str) -> str | None:
        job_id = output.strip().split(";")[0]  # "id;cluster" on a multi-cluster site
        return job_id if job_id.isdigit() else None

    def find_argvs(self, name: str) -> list[list[str]]:
        """The live queue first (it keeps ended jobs for MinJobAge); then, where there is
        accounting, sacct, which for a few seconds after a short job ends may still call it
        "allocation" (Slurm 22.05), hence never sacct alone."""
        live = ["squeue", "-h", "--states=all", "--name", name, "-o", "%i"]
        if not self.site.accounting:
            return [live]
        return [
            live,
            ["sacct", "-n", "-X", "-P", "--name", name, "-o", "JobIDRaw", "-S", "now-7days"],
        ]

    def status_argv(self, ids: list[str]) -> list[str]:
        joined = ",".join(ids)
        if self.site.accounting:
            return ["sacct", "-n", "-X", "-P", "-j", joined, "-o", SACCT_FIELDS]
        return ["squeue", "-h", "--states=all", "-j", joined, "-o", SQUEUE_FORMAT]

    def parse_statuses(self, output: str, ids: list[str]) -> dict[str, BatchStatus]:
        return parse_sacct(output) if self.site.accounting else parse_squeue(output)

    def backfill_argvs(self) -> list[list[str]] | None:
        only = ["-p", self.site.queue] if self.site.queue else []
        return [
            ["sinfo", "-h", *only, "-o", SINFO_FORMAT],
            ["squeue", "--start", "-h", *only, "-o", START_FORMAT],
        ]

    def parse_backfill(self, outputs: list[str], now: float) -> list[Window]:
        return slurm_windows(outputs[0], outputs[1], now)


def time_limit(text: str) -> float | None:
    """Seconds of a Slurm time limit (``infinite``, ``UNLIMITED``, ``D-HH:MM:SS``,
    ``HH:MM:SS``, ``MM:SS``); None when there is none."""
    text = text.strip()
    if text.lower() in ("infinite", "unlimited", "n/a", "none"):
        return None
    match = TIME_LIMIT.match(text)
    if match is None:
        raise ValueError(f"not a Slurm time limit: {text!r}")
    days, hours, minutes, seconds = (int(g) if g else 0 for g in match.groups())
    return float(((days * 24 + hours) * 60 + minutes) * 60 + seconds)


def parse_sinfo(output: str) -> dict[str, tuple[int, float | None]]:
    """Partition -> (idle nodes, time limit) from ``sinfo -h -o SINFO_FORMAT``: one line per
    partition and node state; only nodes plainly ``idle`` count (not ``idle*``, which does
    not answer, ``idle~``, powered off, or ``mix``, partly used), only in partitions up."""
    out: dict[str, tuple[int, float | None]] = {}
    for line in output.splitlines():
        parts = line.strip().split("|")
        if len(parts) < 5:
            continue
        partition, avail, nodes, state, limit = parts[:5]
        idle, _ = out.get(partition, (0, None))
        if avail == "up" and state == "idle":
            idle += int(nodes)
        out[partition] = (idle, time_limit(limit))
    return out


def parse_starts(output: str, now: float) -> dict[str, list[tuple[float, int]]]:
    """Partition -> (seconds from ``now``, nodes) of the pending jobs the scheduler has
    planned, from ``squeue --start -h -o START_FORMAT``; jobs with no planned start (N/A)
    are left out. A job that may run in several partitions claims its nodes in each."""
    out: dict[str, list[tuple[float, int]]] = {}
    for line in output.splitlines():
        parts = line.strip().split("|")
        if len(parts) < 4 or parts[2] in ("N/A", "Unknown", ""):
            continue
        _job, partitions, start, nodes = parts[:4]
        at = float(start) if start.isdigit() else datetime.fromisoformat(start).timestamp()
        count = int(nodes.split("-")[0])  # a range ("2-4") asks for at least its first
        for partition in partitions.split(","):
            out.setdefault(partition, []).append((at - now, count))
    return out


def slurm_windows(sinfo: str, starts: str, now: float) -> list[Window]:
    """Every partition's staircase of idle nodes (``backfill.claimed``)."""
    claims = parse_starts(starts, now)
    windows: list[Window] = []
    for partition, (idle, limit) in parse_sinfo(sinfo).items():
        where = f"partition {partition}"
        windows += backfill.claimed(idle, claims.get(partition, []), limit, where)
    return windows
