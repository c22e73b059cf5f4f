"""HTCondor: condor_submit, condor_q, condor_history, condor_rm (HTCondor 10.x, which
tests/fakes/condor copies).

HTCondor reads a submit description, not script directives: ``submit`` writes one next to the
script (``job.sub``) naming the script as the executable and the batch job's name as
``batch_name`` (the JobBatchName attribute, which ``find`` looks up). HTCondor has no queues:
the queue is not used; the project becomes ``+ProjectName``. ``statuses`` asks ``condor_q -json``
for all ids and, only for the ids it did not list, ``condor_history -json``. An evicted job
(preemption) goes back to Idle and HTCondor runs it again, so it reads as queued; a held job
will not run again by itself and counts as failed.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from backends.batchscript import CONTROL_DIR
from backends.schedulers.base import BatchRequest, BatchScheduler, BatchStatus, Cause, State
from backends.schedulers.parsing import Listing, first_group, states
from edgeceleryapp.errors import PermanentError

TRANSIENT = (
    "can't find address of local schedd",
    "failed to connect",
    "connection refused",
    "timed out",
    "try again",
    "communication error",
)
ABSENT = ("not found",)
ATTRS = (
    "ClusterId,ProcId,JobBatchName,JobStatus,ExitCode,ExitBySignal,ExitSignal,"
    "HoldReason,HoldReasonCode,RemoveReason,NumJobStarts"
)
SUBMITTED = re.compile(r"^\s*(\d+\.\d+) - \d+\.\d+\s*$", re.M)
SAFE_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")
HOLD_CODES = {
    1: Cause.CANCELLED,
    46: Cause.TIMEOUT,
    47: Cause.TIMEOUT,
}  # UserRequest, JobDurationExceeded...


def hold_cause(code: int | None, reason: str) -> str:
    said = reason.lower()
    if "node" in said and any(w in said for w in ("down", "fail", "lost")):
        return Cause.NODE_FAIL
    if "memory" in said:
        return Cause.OUT_OF_MEMORY
    return HOLD_CODES.get(code or 0, Cause.PREEMPTED)


def parse_ads(output: str) -> Listing:
    """id ("123.0") -> (JobBatchName, status) from ``condor_q``/``condor_history -json``."""
    out: Listing = {}
    for a in json.loads(output) if output.strip() else []:
        status, note = a.get("JobStatus"), f"condor: JobStatus {a.get('JobStatus')}"
        if status == 1:
            again = a.get("NumJobStarts", 0) > 0
            result = BatchStatus(
                State.QUEUED, None, note + (" (evicted, idle again)" if again else "")
            )
        elif status in (2, 6, 7):
            result = BatchStatus(State.RUNNING, None, note)
        elif status == 3:
            result = BatchStatus(
                State.FAILED, None, f"{note} ({a.get('RemoveReason', '')})", Cause.CANCELLED
            )
        elif status == 5:
            reason = a.get("HoldReason", "")
            cause = hold_cause(a.get("HoldReasonCode"), reason)
            result = BatchStatus(State.FAILED, None, f"{note} (held: {reason})", cause)
        elif a.get("ExitBySignal"):
            result = BatchStatus(
                State.FINISHED, None, f"{note} (killed by signal {a.get('ExitSignal')})"
            )
        else:
            result = BatchStatus(State.FINISHED, a.get("ExitCode"), note)
        out[f"{a['ClusterId']}.{a.get('ProcId', 0)}"] = (a.get("JobBatchName", ""), result)
    return out


class CondorScheduler(BatchScheduler):
    kind = "condor"
    template = (
        "universe = {universe}",
        "executable = {script}",
        "initialdir = {workdir}",
        "output = {out}",
        "error = {err}",
        "log = {log}",
        "batch_name = {name}",
        "request_cpus = {ppn}",
        "should_transfer_files = NO",
    )
    optional = (
        ("parallel", "machine_count = {nodes}"),
        ("project", '+ProjectName = "{project}"'),
        ("minutes", "allowed_job_duration = {seconds}"),
    )
    transient = TRANSIENT
    cancel_command = ("condor_rm",)
    absent = {"condor_rm": ABSENT}

    def fields(self, job: BatchRequest) -> dict[str, object]:
        parallel = job.num_nodes > 1
        return super().fields(job) | {
            "universe": "parallel" if parallel else "vanilla",
            "parallel": parallel,
            "log": job.workdir / CONTROL_DIR / "condor.log",
            "seconds": (job.wall_time_minutes or 0) * 60,
        }

    def description(self, script: Path, job: BatchRequest) -> str:
        return "\n".join([*self.header(job, script=script), "queue"]) + "\n"

    def prepare(self, script: Path, job: BatchRequest) -> None:
        script.chmod(0o755)  # HTCondor runs the executable itself
        part = script.with_suffix(".sub.part")
        part.write_text(self.description(script, job))
        part.replace(script.with_suffix(".sub"))

    def submit_argv(self, script: Path, job: BatchRequest) -> list[str]:
        return ["condor_submit", "-terse", str(script.with_suffix(".sub"))]

    def parse_submit(self, output: str) -> str | None:
        return first_group(SUBMITTED, output)

    def find_argvs(self, name: str) -> list[list[str]]:
        if not SAFE_NAME.match(name):
            raise PermanentError(f"find: {name!r} is not a batch job name")
        constraint = ["-constraint", f'JobBatchName == "{name}"']
        return [
            ["condor_q", "-json", "-attributes", ATTRS, *constraint],
            ["condor_history", "-json", "-attributes", ATTRS, "-limit", "1", *constraint],
        ]

    def parse_found(self, argv: list[str], output: str, name: str) -> list[str]:
        return list(parse_ads(output))

    def status_argv(self, ids: list[str]) -> list[str]:
        return ["condor_q", "-json", "-attributes", ATTRS, *ids]

    def parse_statuses(self, output: str, ids: list[str]) -> dict[str, BatchStatus]:
        return states(parse_ads(output))

    def history_argv(self, missing: list[str]) -> list[str] | None:
        return ["condor_history", "-json", "-attributes", ATTRS, *missing]
