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
from pathlib import Path

from backends.runners.base import CommandResult
from backends.schedulers.base import (
    FAILED,
    FINISHED,
    NODE_FAIL,
    QUEUED,
    RUNNING,
    TIMEOUT,
    BatchRequest,
    BatchStatus,
    Scheduler,
)
from edgeceleryapp.errors import PermanentError

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
FAILED_CAUSES = {25: NODE_FAIL, 37: TIMEOUT}
MEANING = {25: "the run was lost with its execution host", 37: "the h_rt limit"}
HISTORY_DAYS = "7"
NAME_PATTERN = "ec*"


def parse_qstat_xml(output: str) -> dict[str, tuple[str, BatchStatus]]:
    """id -> (job name, status) from ``qstat -xml``."""
    out: dict[str, tuple[str, BatchStatus]] = {}
    if not output.strip():
        return out
    for job in ET.fromstring(output).iter("job_list"):  # noqa: S314 - our scheduler's answer
        letters = job.findtext("state", "")
        if "E" in letters:  # error state: it will not run until an administrator clears it
            status = BatchStatus(FAILED, None, f"sge: {letters} (job in error state)")
        elif any(c in letters for c in "rtRsST"):
            status = BatchStatus(RUNNING, None, f"sge: {letters}")
        else:
            status = BatchStatus(QUEUED, None, f"sge: {letters}")
        out[job.findtext("JB_job_number", "")] = (job.findtext("JB_name", ""), status)
    return out


def parse_qacct(output: str) -> dict[str, tuple[str, BatchStatus]]:
    """id -> (job name, status) from ``qacct -j`` records."""
    out: dict[str, tuple[str, BatchStatus]] = {}
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
            status = BatchStatus(FAILED, code, note, FAILED_CAUSES[failed])
        elif failed not in (0, 100):
            status = BatchStatus(FAILED, code, note)
        else:
            status = BatchStatus(FINISHED, code, note)
        out[fields["jobnumber"].strip()] = (fields.get("jobname", "").strip(), status)
    return out


class SGEScheduler(Scheduler):
    kind = "sge"

    def directives(self, job: BatchRequest) -> list[str]:
        control = job.workdir / ".edgecelery"
        lines = [
            f"-N {job.name}",
            f"-o {control / 'batch.out'}",
            f"-e {control / 'batch.err'}",
            "-S /bin/sh",
            "-r n",
        ]
        if job.wall_time_minutes:
            lines.append(
                f"-l h_rt={job.wall_time_minutes // 60}:{job.wall_time_minutes % 60:02d}:00"
            )
        if job.queue:
            lines.append(f"-q {job.queue}")
        if job.project:
            lines.append(f"-P {job.project}")
        return [f"#$ {line}" for line in [*lines, *job.options]]

    def submit(self, script: Path, job: BatchRequest) -> str:
        out = self.command(["qsub", str(script)], "submit", TRANSIENT)
        match = SUBMITTED.search(out)
        if match is None:
            raise PermanentError(f"submit: qsub answered {out!r}, not a job id")
        return match.group(1)

    def _accounting(self, pattern: str) -> dict[str, tuple[str, BatchStatus]]:
        argv = ["qacct", "-d", HISTORY_DAYS, "-j", pattern]
        return parse_qacct(self.command(argv, "accounting", TRANSIENT, absent=ABSENT))

    def find(self, name: str) -> str | None:
        live = parse_qstat_xml(self.command(["qstat", "-xml"], "find", TRANSIENT))
        ids = [i for i, (n, _) in live.items() if n == name]
        if not ids:
            ids = [i for i, (n, _) in self._accounting(name).items() if n == name]
        return ids[-1] if ids else None

    def statuses(self, ids: list[str]) -> dict[str, BatchStatus]:
        if not ids:
            return {}
        live = parse_qstat_xml(self.command(["qstat", "-xml"], "status", TRANSIENT))
        out = {i: live[i][1] for i in ids if i in live}
        if len(out) < len(ids):
            ended = self._accounting(NAME_PATTERN)
            out |= {i: ended[i][1] for i in ids if i not in out and i in ended}
        return out

    def cancel(self, batch_id: str) -> None:
        self.command(["qdel", batch_id], "cancel", TRANSIENT, answered=_already_gone)


def _already_gone(result: CommandResult) -> bool:
    """qdel of a job that has ended: 'denied: job "7" does not exist', on stdout."""
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    return bool(lines) and all("does not exist" in line for line in lines)
