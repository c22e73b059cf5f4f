"""IBM Spectrum LSF: bsub, bjobs, bkill (LSF 10.1, which tests/fakes/lsf copies).

The script goes to ``bsub`` on stdin, so its ``#BSUB`` lines are read (``bsub job.sh`` would
take the file as a command). One ``bjobs -a -json -o ...`` answers for many ids, finished
jobs included for the cluster's CLEAN_PERIOD; an id it does not know comes back as an
``ERROR`` record and a non-zero exit, and is left out.
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
    "lsf is down",
    "please wait",
    "not responding",
    "try again",
    "timed out",
    "cannot connect",
    "temporarily unavailable",
    "failed in an lsf library call",
)
ABSENT = ("is not found", "no matching job", "already finished")
FIELDS = "jobid job_name stat exit_code exit_reason"
STATES = {"PEND": QUEUED, "PSUSP": QUEUED, "WAIT": QUEUED, "PROV": QUEUED}
STATES |= {"RUN": RUNNING, "USUSP": RUNNING, "SSUSP": RUNNING, "UNKWN": RUNNING}
STATES |= {"ZOMBI": RUNNING, "DONE": FINISHED, "EXIT": FINISHED}
# Termination reasons (bjobs -l / bhist words, or the descriptions -o exit_reason prints).
CAUSES = (
    (("TERM_PREEMPT", "preempt"), PREEMPTED),
    (("TERM_RUNLIMIT", "TERM_DEADLINE", "TERM_CPULIMIT", "run time limit"), TIMEOUT),
    (("TERM_MEMLIMIT", "TERM_SWAP", "memory limit"), OUT_OF_MEMORY),
    (("TERM_REMOVE_HUNG_JOB", "TERM_ZOMBIE", "host became unavailable"), NODE_FAIL),
    (("TERM_OWNER", "TERM_ADMIN", "TERM_FORCE_OWNER", "TERM_FORCE_ADMIN"), CANCELLED),
)
SUBMITTED = re.compile(r"Job <(\d+)> is submitted")


def cause_of(reason: str) -> str:
    said = reason.lower()
    return next((c for words, c in CAUSES if any(w.lower() in said for w in words)), "")


def parse_bjobs_json(output: str) -> dict[str, BatchStatus]:
    out: dict[str, BatchStatus] = {}
    for record in json.loads(output).get("RECORDS", []) if output.strip() else []:
        if "ERROR" in record or "JOBID" not in record:
            continue
        stat, reason = record.get("STAT", ""), record.get("EXIT_REASON", "")
        code_text = record.get("EXIT_CODE", "")
        code = int(code_text) if code_text.lstrip("-").isdigit() else None
        state = STATES.get(stat, QUEUED)
        if stat == "DONE":
            code = 0
        note = f"lsf: {stat}" + (f" ({reason})" if reason else "")
        cause = cause_of(reason) if stat == "EXIT" else ""
        out[record["JOBID"]] = BatchStatus(FAILED if cause else state, code, note, cause)
    return out


class LSFScheduler(Scheduler):
    kind = "lsf"

    def directives(self, job: BatchRequest) -> list[str]:
        control = job.workdir / ".edgecelery"
        lines = [
            f"-J {job.name}",
            f"-o {control / 'batch.out'}",
            f"-e {control / 'batch.err'}",
            f"-n {job.num_nodes * job.processes_per_node}",
            f'-R "span[ptile={job.processes_per_node}]"',
        ]
        if job.wall_time_minutes:
            lines.append(f"-W {job.wall_time_minutes}")
        if job.queue:
            lines.append(f"-q {job.queue}")
        if job.project:
            lines.append(f"-P {job.project}")
        return [f"#BSUB {line}" for line in [*lines, *job.options]]

    def submit(self, script: Path, job: BatchRequest) -> str:
        out = self.command(["bsub"], "submit", TRANSIENT, stdin=script.read_bytes())
        match = SUBMITTED.search(out)
        if match is None:
            raise PermanentError(f"submit: bsub answered {out!r}, not a job id")
        return match.group(1)

    def find(self, name: str) -> str | None:
        out = self.command(
            ["bjobs", "-a", "-noheader", "-o", "jobid", "-J", name],
            "find",
            TRANSIENT,
            absent=ABSENT,
        )
        ids = [line.strip() for line in out.splitlines() if line.strip().isdigit()]
        return ids[-1] if ids else None

    def statuses(self, ids: list[str]) -> dict[str, BatchStatus]:
        if not ids:
            return {}
        argv = ["bjobs", "-a", "-json", "-o", FIELDS, *ids]
        # An unknown id makes bjobs exit 255 after answering for the others.
        out = self.command(
            argv, "status", TRANSIENT, absent=ABSENT, answered=lambda r: '"RECORDS"' in r.stdout
        )
        return parse_bjobs_json(out)

    def cancel(self, batch_id: str) -> None:
        self.command(["bkill", batch_id], "cancel", TRANSIENT, absent=ABSENT)
