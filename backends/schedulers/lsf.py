"""IBM Spectrum LSF: bsub, bjobs, bkill (LSF 10.1, which tests/fakes/lsf copies).

The script goes to ``bsub`` on stdin, so its ``#BSUB`` lines are read (``bsub job.sh`` would
take the file as a command). One ``bjobs -a -json -o ...`` answers for many ids, finished
jobs included for the cluster's CLEAN_PERIOD; an id it does not know comes back as an
``ERROR`` record and a non-zero exit, and is left out.
"""

from __future__ import annotations

import json
import re

from backends.runners.base import CommandResult
from backends.schedulers.base import BatchScheduler, BatchStatus, Cause, State
from backends.schedulers.parsing import first_group

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
STATES = dict.fromkeys(("PEND", "PSUSP", "WAIT", "PROV"), State.QUEUED)
STATES |= dict.fromkeys(("RUN", "USUSP", "SSUSP", "UNKWN", "ZOMBI"), State.RUNNING)
STATES |= dict.fromkeys(("DONE", "EXIT"), State.FINISHED)
# Termination reasons (bjobs -l / bhist words, or the descriptions -o exit_reason prints).
CAUSES = (
    (("TERM_PREEMPT", "preempt"), Cause.PREEMPTED),
    (("TERM_RUNLIMIT", "TERM_DEADLINE", "TERM_CPULIMIT", "run time limit"), Cause.TIMEOUT),
    (("TERM_MEMLIMIT", "TERM_SWAP", "memory limit"), Cause.OUT_OF_MEMORY),
    (("TERM_REMOVE_HUNG_JOB", "TERM_ZOMBIE", "host became unavailable"), Cause.NODE_FAIL),
    (("TERM_OWNER", "TERM_ADMIN", "TERM_FORCE_OWNER", "TERM_FORCE_ADMIN"), Cause.CANCELLED),
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
        state = STATES.get(stat, State.QUEUED)
        if stat == "DONE":
            code = 0
        note = f"lsf: {stat}" + (f" ({reason})" if reason else "")
        cause = cause_of(reason) if stat == "EXIT" else ""
        out[record["JOBID"]] = BatchStatus(State.FAILED if cause else state, code, note, cause)
    return out


class LSFScheduler(BatchScheduler):
    kind = "lsf"
    prefix = "#BSUB"
    template = ("-J {name}", "-o {out}", "-e {err}", "-n {procs}", '-R "span[ptile={ppn}]"')
    optional = (("minutes", "-W {minutes}"), ("queue", "-q {queue}"), ("project", "-P {project}"))
    transient = TRANSIENT
    submit_command = ("bsub",)
    cancel_command = ("bkill",)
    absent = {"bjobs": ABSENT, "bkill": ABSENT}
    script_on_stdin = True

    def parse_submit(self, output: str) -> str | None:
        return first_group(SUBMITTED, output)

    def find_argvs(self, name: str) -> list[list[str]]:
        return [["bjobs", "-a", "-noheader", "-o", "jobid", "-J", name]]

    def status_argv(self, ids: list[str]) -> list[str]:
        return ["bjobs", "-a", "-json", "-o", FIELDS, *ids]

    def parse_statuses(self, output: str, ids: list[str]) -> dict[str, BatchStatus]:
        return parse_bjobs_json(output)

    def answered(self, result: CommandResult) -> bool:
        """An unknown id makes ``bjobs -json`` exit 255 after answering for the others."""
        return super().answered(result) or (
            result.argv[0] == "bjobs" and '"RECORDS"' in result.stdout
        )
