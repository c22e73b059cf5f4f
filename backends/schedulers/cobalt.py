"""Cobalt (ALCF; 1.0.x as on Theta, which tests/fakes/cobalt copies): qsub, qstat, qdel.

``#COBALT`` directives, script mode. ``qstat -l --header=...`` answers for many ids at once; it
exits 1 with no output when it knows none of them. Cobalt forgets a job the moment it ends:
what became of it is only in its ``.cobaltlog``. The batch jobs of a site therefore run with
``--cwd`` set to a spool directory under the site's work directory, where Cobalt writes
``<jobid>.cobaltlog``; ids that qstat no longer lists are looked up there (files, not
commands). For the same reason ``find`` sees only jobs still in the queue.
"""

from __future__ import annotations

import re
from pathlib import Path

from backends.schedulers.base import (
    BOOT_FAIL,
    CANCELLED,
    FAILED,
    FINISHED,
    NODE_FAIL,
    PREEMPTED,
    QUEUED,
    RUNNING,
    TIMEOUT,
    BatchRequest,
    BatchStatus,
    Scheduler,
)
from edgeceleryapp.errors import PermanentError

TRANSIENT = ("failed to connect", "connection refused", "timed out", "try again", "not responding")
HEADER = "Jobid:JobName:State"
ACTIVE = ("running", "exiting", "killing")
NORMAL = re.compile(r"task completed normally with an exit code of (-?\d+)")
# The last words of a .cobaltlog when a job did not end normally.
ENDINGS = (
    ("maximum execution time exceeded", TIMEOUT),
    ("node failure", NODE_FAIL),
    ("boot failed", BOOT_FAIL),
    ("preempt", PREEMPTED),
    ("qdel", CANCELLED),
)


def parse_qstat_long(output: str) -> dict[str, tuple[str, BatchStatus]]:
    """id -> (job name, status) from ``qstat -l --header=Jobid:JobName:State``."""
    out: dict[str, tuple[str, BatchStatus]] = {}
    for block in re.split(r"\n\s*\n", output):
        fields = {}
        for line in block.splitlines():
            key, sep, value = line.partition(":")
            if sep:
                fields[key.strip().lower()] = value.strip()
        if not fields.get("jobid", "").isdigit():
            continue
        state = fields.get("state", "")
        if state == "dep_fail":
            status = BatchStatus(FAILED, None, "cobalt: dep_fail")
        else:
            status = BatchStatus(RUNNING if state in ACTIVE else QUEUED, None, f"cobalt: {state}")
        out[fields["jobid"]] = (fields.get("jobname", ""), status)
    return out


def parse_cobaltlog(text: str) -> BatchStatus | None:
    """The outcome a job's .cobaltlog records, or None while it records none."""
    lines = [line for line in text.splitlines() if "Info:" in line]
    last = lines[-1].split("Info:", 1)[1].strip() if lines else ""
    if (match := NORMAL.search(last)) is not None:
        return BatchStatus(FINISHED, int(match.group(1)), f"cobalt: {last}")
    for words, cause in ENDINGS:
        if words in last:
            return BatchStatus(FAILED, None, f"cobalt: {last}", cause)
    if "initiating job" in last:
        return BatchStatus(FINISHED, None, f"cobalt: {last}")
    return None


class CobaltScheduler(Scheduler):
    kind = "cobalt"

    @property
    def spool(self) -> Path:
        return self.site.workdir / ".cobalt"

    def directives(self, job: BatchRequest) -> list[str]:
        control = job.workdir / ".edgecelery"
        lines = [
            f"--jobname {job.name}",
            f"-n {job.num_nodes}",
            f"--proccount {job.num_nodes * job.processes_per_node}",
            f"--cwd {self.spool}",
            f"-o {control / 'batch.out'}",
            f"-e {control / 'batch.err'}",
            f"-t {job.wall_time_minutes or 60}",
        ]
        if job.queue:
            lines.append(f"-q {job.queue}")
        if job.project:
            lines.append(f"-A {job.project}")
        return [f"#COBALT {line}" for line in [*lines, *job.options]]

    def submit(self, script: Path, job: BatchRequest) -> str:
        self.spool.mkdir(parents=True, exist_ok=True)
        script.chmod(0o755)  # Cobalt runs the script itself
        out = self.command(["qsub", str(script)], "submit", TRANSIENT)
        lines = [line.strip() for line in out.splitlines() if line.strip()]
        if not lines or not lines[-1].isdigit():
            raise PermanentError(f"submit: qsub answered {out!r}, not a job id")
        return lines[-1]

    def _qstat(self, ids: list[str], what: str) -> dict[str, tuple[str, BatchStatus]]:
        argv = ["qstat", "-l", f"--header={HEADER}", *ids]
        # Exit 1 with no output at all: none of the ids is in the queue.
        out = self.command(
            argv,
            what,
            TRANSIENT,
            answered=lambda r: r.returncode == 1 and not (r.stdout.strip() or r.stderr.strip()),
        )
        return parse_qstat_long(out)

    def find(self, name: str) -> str | None:
        ids = [i for i, (n, _) in self._qstat([], "find").items() if n == name]
        return ids[-1] if ids else None

    def statuses(self, ids: list[str]) -> dict[str, BatchStatus]:
        if not ids:
            return {}
        out = {i: s for i, (_, s) in self._qstat(ids, "status").items() if i in ids}
        for job_id in ids:
            if job_id not in out and job_id.isdigit():
                try:
                    ended = parse_cobaltlog((self.spool / f"{job_id}.cobaltlog").read_text())
                except FileNotFoundError:
                    ended = None
                if ended is not None:
                    out[job_id] = ended
        return out

    def cancel(self, batch_id: str) -> None:
        self.command(["qdel", batch_id], "cancel", TRANSIENT)
