"""Grid Engine (Son of Grid Engine 8.1, Univa/Altair GE): qsub, qstat, qacct, qdel.

``qstat -xml`` lists the user's pending and running jobs in one command; a finished job leaves
it at once, so ids missing from it are looked up in ONE ``qacct -j 'ec*'`` call (our batch
jobs are all named ``ec<subjob>a<attempt>``), which reads the accounting file. Jobs neither
lists are left out. Grid Engine has no node count: a site that wants slots sets its parallel
environment in ``scheduler_options`` (e.g. "-pe smp 8"). Formats of SGE 8.1.9
(tests/fakes/sge copies them).
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

from backends.runners.base import CommandResult
from backends.schedulers.base import BatchScheduler, BatchStatus, Cause, State
from backends.schedulers.parsing import Listing, first_group, named, states

TRANSIENT = (
    "unable to contact qmaster",
    "unable to send message to qmaster",
    "commlib error",
    "got send error",
    "timed out",
    "try later",
    "try again",
)
# qacct before the first job of a new cell has ended: the accounting file is not there yet.
ABSENT = ("not found", "does not exist", "accounting: no such file or directory")
SUBMITTED = re.compile(r"Your job (\d+) ")
# qacct "failed" codes that name a cause (sge_status(5)), and what they mean here.
FAILED_CAUSES = {25: Cause.NODE_FAIL, 37: Cause.TIMEOUT}
MEANING = {25: "the run was lost with its execution host", 37: "the h_rt limit"}
HISTORY_DAYS = "7"
NAME_PATTERN = "ec*"


def parse_qstat_xml(output: str) -> Listing:
    """id -> (job name, status) from ``qstat -xml``."""
    out: Listing = {}
    if not output.strip():
        return out
    for job in ET.fromstring(output).iter("job_list"):  # noqa: S314 - our scheduler's answer
        letters = job.findtext("state", "")
        if "E" in letters:  # error state: it will not run until an administrator clears it
            status = BatchStatus(State.FAILED, None, f"sge: {letters} (job in error state)")
        elif any(c in letters for c in "rtRsST"):
            status = BatchStatus(State.RUNNING, None, f"sge: {letters}")
        else:
            status = BatchStatus(State.QUEUED, None, f"sge: {letters}")
        out[job.findtext("JB_job_number", "")] = (job.findtext("JB_name", ""), status)
    return out


def parse_qacct(output: str) -> Listing:
    """id -> (job name, status) from ``qacct -j`` records."""
    out: Listing = {}
    for block in re.split(r"^=+\s*$", output, flags=re.M):
        fields = dict([*line.split(None, 1), ""][:2] for line in block.splitlines() if line.strip())
        if "jobnumber" not in fields:
            continue
        failed_text = fields.get("failed", "0").strip()
        failed = int(failed_text.split()[0]) if failed_text[:1].isdigit() else 0
        code_text = fields.get("exit_status", "").strip()
        code = int(code_text) if code_text.isdigit() else None
        note = f"sge: failed {failed_text}, exit_status {code_text}"
        note += f": {MEANING[failed]}" if failed in MEANING else ""
        if failed in FAILED_CAUSES:
            status = BatchStatus(State.FAILED, code, note, FAILED_CAUSES[failed])
        elif failed not in (0, 100):
            status = BatchStatus(State.FAILED, code, note)
        else:
            status = BatchStatus(State.FINISHED, code, note)
        out[fields["jobnumber"].strip()] = (fields.get("jobname", "").strip(), status)
    return out


class SGEScheduler(BatchScheduler):
    kind = "sge"
    prefix = "#$"
    template = ("-N {name}", "-o {out}", "-e {err}", "-S /bin/sh", "-r n")
    optional = (
        ("minutes", "-l h_rt={hours}:{mins:02d}:00"),
        ("queue", "-q {queue}"),
        ("project", "-P {project}"),
    )
    transient = TRANSIENT
    submit_command = ("qsub",)
    cancel_command = ("qdel",)
    absent = {"qacct": ABSENT}

    def parse_submit(self, output: str) -> str | None:
        return first_group(SUBMITTED, output)

    def find_argvs(self, name: str) -> list[list[str]]:
        return [["qstat", "-xml"], ["qacct", "-d", HISTORY_DAYS, "-j", name]]

    def parse_found(self, argv: list[str], output: str, name: str) -> list[str]:
        listing = parse_qstat_xml(output) if argv[0] == "qstat" else parse_qacct(output)
        return named(listing, name)

    def status_argv(self, ids: list[str]) -> list[str]:
        return ["qstat", "-xml"]

    def parse_statuses(self, output: str, ids: list[str]) -> dict[str, BatchStatus]:
        return states(parse_qstat_xml(output))

    def history_argv(self, missing: list[str]) -> list[str] | None:
        return ["qacct", "-d", HISTORY_DAYS, "-j", NAME_PATTERN]

    def parse_history(self, output: str, ids: list[str]) -> dict[str, BatchStatus]:
        return states(parse_qacct(output))

    def answered(self, result: CommandResult) -> bool:
        """qdel of a job that has ended: 'denied: job "7" does not exist', on stdout."""
        lines = [line for line in result.stdout.splitlines() if line.strip()]
        gone = bool(lines) and all("does not exist" in line for line in lines)
        return super().answered(result) or (result.argv[0] == "qdel" and gone)
