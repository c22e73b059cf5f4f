"""Slurm: sbatch, squeue, scancel (and sacct where the site has accounting).

One status command per tick: ``squeue --states=all`` shows pending, running and recently ended
jobs (kept for the controller's MinJobAge); at a site with ``accounting = true`` the plug-in
asks ``sacct`` instead, which remembers every job. Formats
are those of Slurm 22.05 (Debian 12), unchanged since 20.11.
"""

from __future__ import annotations

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
