"""PBS in two dialects: PBS Professional / OpenPBS (``pbs``) and TORQUE (``torque``).

qsub, qstat, qdel (and PBS Pro's qselect). PBS Pro answers ``qstat -f -F json -x`` for queued,
running and finished (history) jobs in one command; TORQUE answers ``qstat -x`` in XML and keeps
completed jobs (state C) for its keep_completed time. An unknown id makes qstat exit 153
("Unknown Job Id") while it still answers for the others. Formats are those of OpenPBS 22.05
and TORQUE 6.1 (tests/fakes/pbs copies them).

Backfill windows: ``pbsnodes`` says which nodes are free (PBS Pro ``-a -F json``, TORQUE
``-x``), ``qstat -B -f`` the server's limits and queued jobs (PBS Pro with ``-F json``;
TORQUE prints ``key = value`` lines). PBS prints no planned start times there, so free nodes
are free up to the server's longest wall time (``resources_max.walltime``), or without known
end; the jobs queued at the server are named with the window, as they may take the nodes at
the next scheduling cycle.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

from backends.backfill import Window
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


def seconds(text: str) -> float:
    """``[[HH:]MM:]SS`` as PBS prints wall times."""
    total = 0
    for part in text.strip().split(":"):
        total = total * 60 + int(part)
    return float(total)


Server = tuple[str, float | None, int]  # name, longest wall time allowed, jobs queued


def parse_pro_nodes(output: str) -> int:
    """Nodes ``free`` with no job on them, from ``pbsnodes -a -F json``."""
    nodes = json.loads(output).get("nodes", {}) if output.strip() else {}
    return sum(1 for n in nodes.values() if n.get("state") == "free" and not n.get("jobs"))


def parse_torque_nodes(output: str) -> int:
    """Nodes ``free`` with no job on them, from ``pbsnodes -x``."""
    if not output.strip():
        return 0
    root = ET.fromstring(output)  # noqa: S314 - our own scheduler's answer
    return sum(
        1
        for node in root.iter("Node")
        if node.findtext("state", "") == "free" and not node.findtext("jobs", "").strip()
    )


def queued(state_count: str) -> int:
    """The ``Queued:N`` of a server's ``state_count``."""
    counts = dict(item.split(":", 1) for item in state_count.split() if ":" in item)
    return int(counts.get("Queued", "0"))


def parse_pro_server(output: str) -> Server:
    """From ``qstat -B -f -F json``."""
    servers = json.loads(output)["Server"]
    name, attrs = next(iter(servers.items()))
    longest = attrs.get("resources_max", {}).get("walltime")
    return name, seconds(longest) if longest else None, queued(attrs.get("state_count", ""))


def parse_torque_server(output: str) -> Server:
    """From ``qstat -B -f``: ``Server: name``, then indented ``key = value`` lines."""
    name, attrs = "", {}
    for line in output.splitlines():
        if line.startswith("Server:"):
            name = line.split(":", 1)[1].strip()
        key, sep, value = line.partition(" = ")
        if sep:
            attrs[key.strip()] = value.strip()
    if not name:
        raise ValueError("no 'Server:' line")
    longest = attrs.get("resources_max.walltime")
    return name, seconds(longest) if longest else None, queued(attrs.get("state_count", ""))


def pbs_windows(free: int, server: Server) -> list[Window]:
    name, longest, waiting = server
    jobs = f"{waiting} job{'s' if waiting != 1 else ''} queued"
    where = f"server {name}" + (f" ({jobs})" if waiting else "")
    return [Window(free, longest, where)] if free else []


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

    def backfill_argvs(self) -> list[list[str]] | None:
        return [["pbsnodes", "-a", "-F", "json"], ["qstat", "-B", "-f", "-F", "json"]]

    def parse_backfill(self, outputs: list[str], now: float) -> list[Window]:
        return pbs_windows(parse_pro_nodes(outputs[0]), parse_pro_server(outputs[1]))


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

    def backfill_argvs(self) -> list[list[str]] | None:
        return [["pbsnodes", "-x"], ["qstat", "-B", "-f"]]

    def parse_backfill(self, outputs: list[str], now: float) -> list[Window]:
        return pbs_windows(parse_torque_nodes(outputs[0]), parse_torque_server(outputs[1]))
