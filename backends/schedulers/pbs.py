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

from backends.schedulers.base import BatchRequest, BatchScheduler, BatchStatus, Cause, State
from backends.schedulers.parsing import Listing, is_id, last_line, named, states

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
LOST, LIMIT, MEMORY = Cause.NODE_FAIL, Cause.TIMEOUT, Cause.OUT_OF_MEMORY
PRO_CODES = {-1: LOST, -3: LOST, -14: LOST, -20: LOST, -29: LIMIT}
PRO_CODES |= {-26: MEMORY, -27: MEMORY, -28: LIMIT}
TORQUE_CODES = {-1: LOST, -3: LOST, -10: MEMORY, -11: LIMIT, -12: LIMIT}
TORQUE_CODES |= {271: LIMIT}  # SIGTERM at the wall-time limit


def status_of(state: str, code: int | None, comment: str, codes: dict[int, str]) -> BatchStatus:
    note = f"pbs: {state}" + (f", exit status {code}" if code is not None else "")
    note += f" ({comment})" if comment else ""
    if state not in ENDED:
        return BatchStatus(State.RUNNING if state in ACTIVE else State.QUEUED, None, note)
    said = comment.lower()
    if "node" in said and ("down" in said or "fail" in said):
        return BatchStatus(State.FAILED, code, note, LOST)
    if "preempt" in said:
        return BatchStatus(State.FAILED, code, note, Cause.PREEMPTED)
    if "walltime" in said and "exceed" in said:
        return BatchStatus(State.FAILED, code, note, LIMIT)
    if code is not None and code in codes:
        return BatchStatus(State.FAILED, code, note, codes[code])
    if code is not None and code < 0:
        return BatchStatus(State.FAILED, code, note)
    return BatchStatus(State.FINISHED, code, note)


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


def parse_torque_xml(output: str) -> Listing:
    """``qstat -x`` of TORQUE: id -> (job name, status)."""
    out: Listing = {}
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


class PBSProScheduler(BatchScheduler):
    kind = "pbs"
    prefix = "#PBS"
    resources = "select={nodes}:ncpus={ppn}:mpiprocs={ppn}"
    # "-r n": a lost run ends the attempt; resubmit_on decides what comes next.
    template = ("-N {name}", "-o {out}", "-e {err}", "-l {resources}", "-r n")
    optional = (
        ("minutes", "-l walltime={hours:02d}:{mins:02d}:00"),
        ("queue", "-q {queue}"),
        ("project", "-A {project}"),
    )
    transient = TRANSIENT
    submit_command = ("qsub",)
    cancel_command = ("qdel",)
    absent = {"qstat": ABSENT, "qdel": ABSENT}

    def fields(self, job: BatchRequest) -> dict[str, object]:
        values = super().fields(job)
        return values | {"resources": self.resources.format(**values)}

    def parse_submit(self, output: str) -> str | None:
        job_id = last_line(output)
        return job_id if is_id(job_id) else None

    def find_argvs(self, name: str) -> list[list[str]]:
        return [["qselect", "-x", "-N", name]]

    def parse_found(self, argv: list[str], output: str, name: str) -> list[str]:
        return [line.strip() for line in output.splitlines() if line.strip()]

    def status_argv(self, ids: list[str]) -> list[str]:
        return ["qstat", "-f", "-F", "json", "-x", *ids]

    def parse_statuses(self, output: str, ids: list[str]) -> dict[str, BatchStatus]:
        return by_number(ids, parse_pro_json(output))


class TorqueScheduler(PBSProScheduler):
    kind = "torque"
    resources = "nodes={nodes}:ppn={ppn}"

    def find_argvs(self, name: str) -> list[list[str]]:
        # Every job the server knows, completed ones (kept for keep_completed) included.
        return [["qstat", "-x"]]

    def parse_found(self, argv: list[str], output: str, name: str) -> list[str]:
        return named(parse_torque_xml(output), name)

    def status_argv(self, ids: list[str]) -> list[str]:
        return ["qstat", "-x", *ids]

    def parse_statuses(self, output: str, ids: list[str]) -> dict[str, BatchStatus]:
        return by_number(ids, states(parse_torque_xml(output)))
