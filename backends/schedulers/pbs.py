"""PBS in two dialects: PBS Professional / OpenPBS (``pbs``) and TORQUE (``torque``).

qsub, qstat, qdel (and PBS Pro's qselect). PBS Pro answers ``qstat -f -F json -x`` for queued,
running and finished (history) jobs in one command; TORQUE answers ``qstat -x`` in XML and keeps
completed jobs (state C) for its keep_completed time. An unknown id makes qstat exit 153
("Unknown Job Id") while it still answers for the others. Formats are those of OpenPBS 22.05
and TORQUE 6.1 (tests/fakes/pbs copies them).
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

from backends.schedulers.base import (
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
    "cannot connect to server",
    "connection refused",
    "timed out",
    "try again",
    "end of file",
    "pbs_iff",
    "communication failure",
    "server busy",
)
ABSENT = ("unknown job id", "job has finished", "invalid state for job")
ENDED = ("F", "X", "C")
ACTIVE = ("R", "E", "B", "S", "U")
# Exit statuses that name a cause (JOB_EXEC_* of each dialect; 256+signal is a signal).
PRO_CODES = {-1: NODE_FAIL, -3: NODE_FAIL, -14: NODE_FAIL, -20: NODE_FAIL, -29: TIMEOUT}
PRO_CODES |= {-26: OUT_OF_MEMORY, -27: OUT_OF_MEMORY, -28: TIMEOUT}
TORQUE_CODES = {-1: NODE_FAIL, -3: NODE_FAIL, -10: OUT_OF_MEMORY, -11: TIMEOUT, -12: TIMEOUT}
TORQUE_CODES |= {271: TIMEOUT}  # SIGTERM at the wall-time limit


def status_of(state: str, code: int | None, comment: str, codes: dict[int, str]) -> BatchStatus:
    note = f"pbs: {state}" + (f", exit status {code}" if code is not None else "")
    note += f" ({comment})" if comment else ""
    if state not in ENDED:
        return BatchStatus(RUNNING if state in ACTIVE else QUEUED, None, note)
    said = comment.lower()
    if "node" in said and ("down" in said or "fail" in said):
        return BatchStatus(FAILED, code, note, NODE_FAIL)
    if "preempt" in said:
        return BatchStatus(FAILED, code, note, PREEMPTED)
    if "walltime" in said and "exceed" in said:
        return BatchStatus(FAILED, code, note, TIMEOUT)
    if code is not None and code in codes:
        return BatchStatus(FAILED, code, note, codes[code])
    if code is not None and code < 0:
        return BatchStatus(FAILED, code, note)
    return BatchStatus(FINISHED, code, note)


def by_number(ids: list[str], answer: dict[str, BatchStatus]) -> dict[str, BatchStatus]:
    """Keyed by the ids we asked with: a server may print ``123.host.domain`` for ``123.host``."""
    asked = {i.split(".")[0]: i for i in ids}
    return {asked[k.split(".")[0]]: v for k, v in answer.items() if k.split(".")[0] in asked}


def parse_pro_json(output: str) -> dict[str, BatchStatus]:
    """``qstat -f -F json -x`` of PBS Pro / OpenPBS."""
    jobs = json.loads(output).get("Jobs", {}) if output.strip() else {}
    return {
        job_id: status_of(
            a.get("job_state", "Q"), a.get("Exit_status"), a.get("comment", ""), PRO_CODES
        )
        for job_id, a in jobs.items()
    }


def parse_torque_xml(output: str) -> dict[str, tuple[str, BatchStatus]]:
    """``qstat -x`` of TORQUE: id -> (job name, status)."""
    out: dict[str, tuple[str, BatchStatus]] = {}
    if not output.strip():
        return out
    for job in ET.fromstring(output).iter("Job"):  # noqa: S314 - our own scheduler's answer
        code = job.findtext("exit_status")
        status = status_of(
            job.findtext("job_state", "Q"),
            int(code) if code is not None else None,
            job.findtext("comment", ""),
            TORQUE_CODES,
        )
        out[job.findtext("Job_Id", "")] = (job.findtext("Job_Name", ""), status)
    return out


class PBSProScheduler(Scheduler):
    kind = "pbs"

    def resources(self, job: BatchRequest) -> str:
        ppn = job.processes_per_node
        return f"select={job.num_nodes}:ncpus={ppn}:mpiprocs={ppn}"

    def directives(self, job: BatchRequest) -> list[str]:
        control = job.workdir / ".edgecelery"
        lines = [
            f"-N {job.name}",
            f"-o {control / 'batch.out'}",
            f"-e {control / 'batch.err'}",
            f"-l {self.resources(job)}",
            "-r n",  # a lost run ends the attempt; resubmit_on decides what comes next
        ]
        if job.wall_time_minutes:
            lines.append(
                f"-l walltime={job.wall_time_minutes // 60:02d}:{job.wall_time_minutes % 60:02d}:00"
            )
        if job.queue:
            lines.append(f"-q {job.queue}")
        if job.project:
            lines.append(f"-A {job.project}")
        return [f"#PBS {line}" for line in [*lines, *job.options]]

    def submit(self, script: Path, job: BatchRequest) -> str:
        out = self.command(["qsub", str(script)], "submit", TRANSIENT)
        lines = [line.strip() for line in out.splitlines() if line.strip()]
        if not lines or not lines[-1].split(".")[0].isdigit():
            raise PermanentError(f"submit: qsub answered {out!r}, not a job id")
        return lines[-1]

    def find(self, name: str) -> str | None:
        out = self.command(["qselect", "-x", "-N", name], "find", TRANSIENT)
        ids = [line.strip() for line in out.splitlines() if line.strip()]
        return ids[-1] if ids else None

    def statuses(self, ids: list[str]) -> dict[str, BatchStatus]:
        if not ids:
            return {}
        out = self.command(
            ["qstat", "-f", "-F", "json", "-x", *ids], "status", TRANSIENT, absent=ABSENT
        )
        return by_number(ids, parse_pro_json(out))

    def cancel(self, batch_id: str) -> None:
        self.command(["qdel", batch_id], "cancel", TRANSIENT, absent=ABSENT)


class TorqueScheduler(PBSProScheduler):
    kind = "torque"

    def resources(self, job: BatchRequest) -> str:
        return f"nodes={job.num_nodes}:ppn={job.processes_per_node}"

    def find(self, name: str) -> str | None:
        # Every job the server knows, completed ones (kept for keep_completed) included.
        out = self.command(["qstat", "-x"], "find", TRANSIENT, absent=ABSENT)
        ids = [
            job_id for job_id, (job_name, _) in parse_torque_xml(out).items() if job_name == name
        ]
        return ids[-1] if ids else None

    def statuses(self, ids: list[str]) -> dict[str, BatchStatus]:
        if not ids:
            return {}
        out = self.command(["qstat", "-x", *ids], "status", TRANSIENT, absent=ABSENT)
        answer = {job_id: status for job_id, (_, status) in parse_torque_xml(out).items()}
        return by_number(ids, answer)
