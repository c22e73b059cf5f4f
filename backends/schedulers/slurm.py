"""Slurm: sbatch, squeue, scancel (and sacct where the site has accounting).

One status command per tick: ``squeue --states=all`` shows pending, running and recently ended
jobs (kept for the controller's MinJobAge); at a site with ``accounting = true`` the plug-in
asks ``sacct`` instead, which remembers every job. Formats
are those of Slurm 22.05 (Debian 12), unchanged since 20.11.
"""

from __future__ import annotations

from pathlib import Path

from backends.schedulers.base import (
    BOOT_FAIL,
    CANCELLED,
    FAILED,
    FINISHED,
    NODE_FAIL,
    OUT_OF_MEMORY,
    PREEMPTED,
    QUEUED,
    RUNNING,
    TIMEOUT,
    BatchRequest,
    BatchStatus,
    Scheduler,
)

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

STATES: dict[str, tuple[str, str]] = {
    "PENDING": (QUEUED, ""),
    "CONFIGURING": (QUEUED, ""),
    "REQUEUED": (QUEUED, ""),
    "REQUEUE_HOLD": (QUEUED, ""),
    "REQUEUE_FED": (QUEUED, ""),
    "RESV_DEL_HOLD": (QUEUED, ""),
    "RUNNING": (RUNNING, ""),
    "COMPLETING": (RUNNING, ""),
    "STAGE_OUT": (RUNNING, ""),
    "SUSPENDED": (RUNNING, ""),
    "SIGNALING": (RUNNING, ""),
    "RESIZING": (RUNNING, ""),
    "COMPLETED": (FINISHED, ""),
    "FAILED": (FINISHED, ""),
    "CANCELLED": (FAILED, CANCELLED),
    "TIMEOUT": (FAILED, TIMEOUT),
    "DEADLINE": (FAILED, TIMEOUT),
    "NODE_FAIL": (FAILED, NODE_FAIL),
    "BOOT_FAIL": (FAILED, BOOT_FAIL),
    "PREEMPTED": (FAILED, PREEMPTED),
    "OUT_OF_MEMORY": (FAILED, OUT_OF_MEMORY),
    "SPECIAL_EXIT": (FAILED, ""),
    "REVOKED": (FAILED, CANCELLED),
}

SQUEUE_FORMAT = "%i|%j|%T|%r"
SACCT_FIELDS = "JobIDRaw,JobName,State,ExitCode"


def parse_state(text: str) -> tuple[str, str]:
    """``CANCELLED by 0`` and ``RUNNING`` alike; unknown states count as queued, not done."""
    word = text.split()[0] if text.strip() else ""
    return STATES.get(word, (QUEUED, ""))


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
        code = _exit_code(exit_code) if ours in (FINISHED, FAILED) else None
        out[job_id] = BatchStatus(ours, code, f"slurm: {state}", cause)
    return out


def _exit_code(text: str) -> int | None:
    """sacct's ExitCode is ``code:signal``."""
    code, _, _signal = text.partition(":")
    return int(code) if code.isdigit() else None


class SlurmScheduler(Scheduler):
    kind = "slurm"

    def directives(self, job: BatchRequest) -> list[str]:
        control = job.workdir / ".edgecelery"
        lines = [
            f"--job-name={job.name}",
            f"--chdir={job.workdir}",
            f"--output={control / 'batch.out'}",
            f"--error={control / 'batch.err'}",
            f"--nodes={job.num_nodes}",
            f"--ntasks-per-node={job.processes_per_node}",
        ]
        if job.queue:
            lines.append(f"--partition={job.queue}")
        if job.project:
            lines.append(f"--account={job.project}")
        if job.wall_time_minutes:
            lines.append(f"--time={job.wall_time_minutes}")
        return [f"#SBATCH {line}" for line in [*lines, *job.options]]

    def submit(self, script: Path, job: BatchRequest) -> str:
        out = self.command(["sbatch", "--parsable", str(script)], "submit", TRANSIENT)
        job_id = out.strip().split(";")[0]
        if not job_id.isdigit():
            raise ValueError(f"sbatch answered {out!r}, not a job id")
        return job_id

    def find(self, name: str) -> str | None:
        """The live queue first (it keeps ended jobs for MinJobAge); then, where there is
        accounting, sacct, which for a few seconds after a short job ends may still call it
        "allocation" (Slurm 22.05), hence never sacct alone."""
        out = self.command(
            ["squeue", "-h", "--states=all", "--name", name, "-o", "%i"], "find", TRANSIENT
        )
        if not out.strip() and self.site.accounting:
            out = self.command(
                ["sacct", "-n", "-X", "-P", "--name", name, "-o", "JobIDRaw", "-S", "now-7days"],
                "find",
                TRANSIENT,
            )
        ids = [line.strip() for line in out.splitlines() if line.strip().isdigit()]
        return ids[-1] if ids else None

    def statuses(self, ids: list[str]) -> dict[str, BatchStatus]:
        if not ids:
            return {}
        joined = ",".join(ids)
        if self.site.accounting:
            out = self.command(
                ["sacct", "-n", "-X", "-P", "-j", joined, "-o", SACCT_FIELDS], "status", TRANSIENT
            )
            return parse_sacct(out)
        out = self.command(
            ["squeue", "-h", "--states=all", "-j", joined, "-o", SQUEUE_FORMAT], "status", TRANSIENT
        )
        return parse_squeue(out)

    def cancel(self, batch_id: str) -> None:
        self.command(["scancel", batch_id], "cancel", TRANSIENT)
