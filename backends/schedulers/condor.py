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

from backends.schedulers.base import (
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
HOLD_CODES = {1: CANCELLED, 46: TIMEOUT, 47: TIMEOUT}  # UserRequest, JobDurationExceeded...


def hold_cause(code: int | None, reason: str) -> str:
    said = reason.lower()
    if "node" in said and any(w in said for w in ("down", "fail", "lost")):
        return NODE_FAIL
    if "memory" in said:
        return OUT_OF_MEMORY
    return HOLD_CODES.get(code or 0, PREEMPTED)


def parse_ads(output: str) -> dict[str, tuple[str, BatchStatus]]:
    """id ("123.0") -> (JobBatchName, status) from ``condor_q``/``condor_history -json``."""
    out: dict[str, tuple[str, BatchStatus]] = {}
    for a in json.loads(output) if output.strip() else []:
        status, note = a.get("JobStatus"), f"condor: JobStatus {a.get('JobStatus')}"
        if status == 1:
            again = a.get("NumJobStarts", 0) > 0
            result = BatchStatus(QUEUED, None, note + (" (evicted, idle again)" if again else ""))
        elif status in (2, 6, 7):
            result = BatchStatus(RUNNING, None, note)
        elif status == 3:
            result = BatchStatus(FAILED, None, f"{note} ({a.get('RemoveReason', '')})", CANCELLED)
        elif status == 5:
            reason = a.get("HoldReason", "")
            cause = hold_cause(a.get("HoldReasonCode"), reason)
            result = BatchStatus(FAILED, None, f"{note} (held: {reason})", cause)
        elif a.get("ExitBySignal"):
            result = BatchStatus(FINISHED, None, f"{note} (killed by signal {a.get('ExitSignal')})")
        else:
            result = BatchStatus(FINISHED, a.get("ExitCode"), note)
        out[f"{a['ClusterId']}.{a.get('ProcId', 0)}"] = (a.get("JobBatchName", ""), result)
    return out


class CondorScheduler(Scheduler):
    kind = "condor"

    def description(self, script: Path, job: BatchRequest) -> str:
        control = job.workdir / ".edgecelery"
        lines = [
            "universe = " + ("parallel" if job.num_nodes > 1 else "vanilla"),
            f"executable = {script}",
            f"initialdir = {job.workdir}",
            f"output = {control / 'batch.out'}",
            f"error = {control / 'batch.err'}",
            f"log = {control / 'condor.log'}",
            f"batch_name = {job.name}",
            f"request_cpus = {job.processes_per_node}",
            "should_transfer_files = NO",
        ]
        if job.num_nodes > 1:
            lines.append(f"machine_count = {job.num_nodes}")
        if job.project:
            lines.append(f'+ProjectName = "{job.project}"')
        if job.wall_time_minutes:
            lines.append(f"allowed_job_duration = {job.wall_time_minutes * 60}")
        return "\n".join([*lines, *job.options, "queue"]) + "\n"

    def submit(self, script: Path, job: BatchRequest) -> str:
        script.chmod(0o755)  # HTCondor runs the executable itself
        sub = script.with_suffix(".sub")
        part = sub.with_suffix(".sub.part")
        part.write_text(self.description(script, job))
        part.replace(sub)
        out = self.command(["condor_submit", "-terse", str(sub)], "submit", TRANSIENT)
        match = SUBMITTED.search(out)
        if match is None:
            raise PermanentError(f"submit: condor_submit answered {out!r}, not a job id")
        return match.group(1)

    def find(self, name: str) -> str | None:
        if not SAFE_NAME.match(name):
            raise PermanentError(f"find: {name!r} is not a batch job name")
        constraint = ["-constraint", f'JobBatchName == "{name}"']
        for argv in (
            ["condor_q", "-json", "-attributes", ATTRS, *constraint],
            ["condor_history", "-json", "-attributes", ATTRS, "-limit", "1", *constraint],
        ):
            ids = list(parse_ads(self.command(argv, "find", TRANSIENT)))
            if ids:
                return ids[-1]
        return None

    def statuses(self, ids: list[str]) -> dict[str, BatchStatus]:
        if not ids:
            return {}
        argv = ["condor_q", "-json", "-attributes", ATTRS, *ids]
        out = {i: s for i, (_, s) in parse_ads(self.command(argv, "status", TRANSIENT)).items()}
        missing = [i for i in ids if i not in out]
        if missing:
            argv = ["condor_history", "-json", "-attributes", ATTRS, *missing]
            ended = parse_ads(self.command(argv, "status", TRANSIENT))
            out |= {i: s for i, (_, s) in ended.items() if i in missing}
        return {i: out[i] for i in ids if i in out}

    def cancel(self, batch_id: str) -> None:
        self.command(["condor_rm", batch_id], "cancel", TRANSIENT, absent=ABSENT)
