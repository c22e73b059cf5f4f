"""Cobalt (ALCF; 1.0.x as on Theta, which tests/fakes/cobalt copies): qsub, qstat, qdel.

``#COBALT`` directives, script mode. ``qstat -l --header=...`` answers for many ids at once; it
exits 1 with no output when it knows none of them. Cobalt forgets a job the moment it ends:
what became of it is only in its ``.cobaltlog``. The batch jobs of a site therefore run with
``--cwd`` set to a spool directory under the site's work directory, where Cobalt writes
``<jobid>.cobaltlog``; ids that qstat no longer lists are looked up there (files, not
commands). For the same reason ``find`` sees only jobs still in the queue.

Backfill windows: ``nodelist`` prints one line per node under a header (Node_id, Name,
Queues, Status, MCDRAM, NUMA, Backfill, as on Theta) and a ``=====`` rule; an idle node's
Backfill column is how long it stays free while Cobalt drains nodes for a waiting job
(``HH:MM:SS``), ``-`` when nothing waits for it. Columns are found by their header names.
"""

from __future__ import annotations

import re
from pathlib import Path

from backends import backfill
from backends.backfill import Window
from backends.runners.base import CommandResult
from backends.schedulers.base import BatchRequest, BatchScheduler, BatchStatus, Cause, State
from backends.schedulers.parsing import Listing, last_line, named, states

TRANSIENT = ("failed to connect", "connection refused", "timed out", "try again", "not responding")
HEADER = "Jobid:JobName:State"
ACTIVE = ("running", "exiting", "killing")
NORMAL = re.compile(r"task completed normally with an exit code of (-?\d+)")
# The last words of a .cobaltlog when a job did not end normally.
ENDINGS = (
    ("maximum execution time exceeded", Cause.TIMEOUT),
    ("node failure", Cause.NODE_FAIL),
    ("boot failed", Cause.BOOT_FAIL),
    ("preempt", Cause.PREEMPTED),
    ("qdel", Cause.CANCELLED),
)


def parse_qstat_long(output: str) -> Listing:
    """id -> (job name, status) from ``qstat -l --header=Jobid:JobName:State``."""
    out: Listing = {}
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
            status = BatchStatus(State.FAILED, None, "cobalt: dep_fail")
        else:
            status = BatchStatus(
                State.RUNNING if state in ACTIVE else State.QUEUED, None, f"cobalt: {state}"
            )
        out[fields["jobid"]] = (fields.get("jobname", ""), status)
    return out


def parse_cobaltlog(text: str) -> BatchStatus | None:
    """The outcome a job's .cobaltlog records, or None while it records none."""
    lines = [line for line in text.splitlines() if "Info:" in line]
    last = lines[-1].split("Info:", 1)[1].strip() if lines else ""
    if (match := NORMAL.search(last)) is not None:
        return BatchStatus(State.FINISHED, int(match.group(1)), f"cobalt: {last}")
    for words, cause in ENDINGS:
        if words in last:
            return BatchStatus(State.FAILED, None, f"cobalt: {last}", cause)
    if "initiating job" in last:
        return BatchStatus(State.FINISHED, None, f"cobalt: {last}")
    return None


def parse_nodelist(output: str) -> dict[str, list[float | None]]:
    """Queue -> how long each of its idle nodes stays free (None: no known end)."""
    lines = [line for line in output.splitlines() if line.strip()]
    if not lines:
        return {}
    header = lines[0].split()
    column = {name.lower(): i for i, name in enumerate(header)}
    for needed in ("queues", "status", "backfill"):
        if needed not in column:
            raise ValueError(f"nodelist's header has no {needed!r} column: {lines[0]!r}")
    out: dict[str, list[float | None]] = {}
    for line in lines[1:]:
        fields = line.split()
        if set(line.strip()) == {"="} or len(fields) != len(header):
            continue
        if fields[column["status"]] != "idle":
            continue
        left = fields[column["backfill"]]
        free: float | None = None if left == "-" else _hms(left)
        for queue in fields[column["queues"]].split(":"):
            out.setdefault(queue, []).append(free)
    return out


def _hms(text: str) -> float:
    total = 0
    for part in text.split(":"):
        total = total * 60 + int(part)
    return float(total)


class CobaltScheduler(BatchScheduler):
    kind = "cobalt"
    prefix = "#COBALT"
    template = (
        "--jobname {name}",
        "-n {nodes}",
        "--proccount {procs}",
        "--cwd {spool}",
        "-o {out}",
        "-e {err}",
        "-t {walltime}",
    )
    optional = (("queue", "-q {queue}"), ("project", "-A {project}"))
    transient = TRANSIENT
    submit_command = ("qsub",)
    cancel_command = ("qdel",)

    @property
    def spool(self) -> Path:
        return self.site.workdir / ".cobalt"

    def fields(self, job: BatchRequest) -> dict[str, object]:
        return super().fields(job) | {"spool": self.spool, "walltime": job.wall_time_minutes or 60}

    def prepare(self, script: Path, job: BatchRequest) -> None:
        self.spool.mkdir(parents=True, exist_ok=True)
        script.chmod(0o755)  # Cobalt runs the script itself

    def parse_submit(self, output: str) -> str | None:
        job_id = last_line(output)
        return job_id if job_id.isdigit() else None

    def find_argvs(self, name: str) -> list[list[str]]:
        return [self.status_argv([])]

    def parse_found(self, argv: list[str], output: str, name: str) -> list[str]:
        return named(parse_qstat_long(output), name)

    def status_argv(self, ids: list[str]) -> list[str]:
        return ["qstat", "-l", f"--header={HEADER}", *ids]

    def parse_statuses(self, output: str, ids: list[str]) -> dict[str, BatchStatus]:
        return states(parse_qstat_long(output))

    def backfill_argvs(self) -> list[list[str]] | None:
        return [["nodelist"]]

    def parse_backfill(self, outputs: list[str], now: float) -> list[Window]:
        idle = parse_nodelist(outputs[0])
        queues = [self.site.queue] if self.site.queue else sorted(idle)
        windows: list[Window] = []
        for queue in queues:
            windows += backfill.per_node(idle.get(queue, []), f"queue {queue}")
        return windows

    def ended(self, missing: list[str]) -> dict[str, BatchStatus]:
        out: dict[str, BatchStatus] = {}
        for job_id in filter(str.isdigit, missing):
            try:
                ended = parse_cobaltlog((self.spool / f"{job_id}.cobaltlog").read_text())
            except FileNotFoundError:
                ended = None
            if ended is not None:
                out[job_id] = ended
        return out

    def answered(self, result: CommandResult) -> bool:
        """Exit 1 with no output at all: none of the ids is in the queue."""
        silent = not (result.stdout.strip() or result.stderr.strip())
        return result.argv[0] == "qstat" and result.returncode == 1 and silent
