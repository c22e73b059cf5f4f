"""The scheduler plug-in interface, in the manner of PSI/J's executors: a plug-in says how to
render a batch script, how to build each command, and how to parse each answer.

Batch jobs are named after the subjob and attempt (``BatchRequest.name``) so that ``find`` can
tell whether a submission already happened before the worker crashed.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from backends.backfill import Window
from backends.batchscript import render_body, stream_file
from backends.runners.base import CommandResult, Runner
from edgeceleryapp.errors import PermanentError, TransientError
from edgeceleryapp.settings import SiteSettings

T = TypeVar("T")


class State:
    """What a plug-in maps its scheduler's native states to."""

    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    FINISHED = "EXECUTION_FINISHED"
    FAILED = "FAILED"  # ended for a resource-side reason: node failure, preemption, cancelled...


class Cause:
    """Why a batch job ended badly, in the scheduler's terms mapped to ours. A site's
    ``resubmit_on`` setting lists the causes that earn a new attempt (aCT: resource-side
    errors are resubmitted, job errors are propagated)."""

    NODE_FAIL = "NODE_FAIL"
    BOOT_FAIL = "BOOT_FAIL"
    PREEMPTED = "PREEMPTED"
    TIMEOUT = "TIMEOUT"
    CANCELLED = "CANCELLED"
    OUT_OF_MEMORY = "OUT_OF_MEMORY"
    # The pilot running the subjob ended (killed, wall time, lost) before the subjob did.
    PILOT_ENDED = "PILOT_ENDED"


QUEUED, RUNNING, FINISHED, FAILED = State.QUEUED, State.RUNNING, State.FINISHED, State.FAILED
NODE_FAIL, BOOT_FAIL, PREEMPTED = Cause.NODE_FAIL, Cause.BOOT_FAIL, Cause.PREEMPTED
TIMEOUT, CANCELLED, OUT_OF_MEMORY = Cause.TIMEOUT, Cause.CANCELLED, Cause.OUT_OF_MEMORY


@dataclass(frozen=True)
class BatchRequest:
    """Everything a scheduler needs to submit one subjob attempt."""

    name: str
    workdir: Path
    argv: list[str]
    attempt: int = 1  # names the attempt's own output files (``batchscript.stream_file``)
    queue: str | None = None
    project: str | None = None
    wall_time_minutes: int | None = None
    num_nodes: int = 1
    processes_per_node: int = 1
    env: dict[str, str] = field(default_factory=dict)
    # Scheduler options from the site's approved presets (``scheduler_configs``), never from
    # the job: each is one option as the submit command takes it, e.g. "--constraint=knl".
    options: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class BatchStatus:
    state: str
    exit_code: int | None = None
    reason: str = ""
    cause: str = ""  # one of the causes above, when the scheduler tells us one


class Scheduler(ABC):
    """One site's batch system. ``statuses`` must answer for many jobs in ONE command."""

    kind: str = ""

    def __init__(self, site: SiteSettings, runner: Runner):
        self.site = site
        self.runner = runner

    def directives(self, job: BatchRequest) -> list[str]:
        """The scheduler's header lines (#SBATCH, #PBS, ...); none by default."""
        return []

    def render(self, job: BatchRequest) -> str:
        lines = ["#!/bin/sh", *self.directives(job), *render_body(job.workdir, job.argv, job.env)]
        return "\n".join(lines) + "\n"

    @abstractmethod
    def submit(self, script: Path, job: BatchRequest) -> str:
        """Submit the script; return the scheduler's id for the batch job."""

    @abstractmethod
    def find(self, name: str) -> str | None:
        """The id of a batch job we submitted under ``name``, or None."""

    @abstractmethod
    def statuses(self, ids: list[str]) -> dict[str, BatchStatus]:
        """States of these batch jobs in one query. Jobs the scheduler does not know are left
        out of the answer, never reported as done."""

    @abstractmethod
    def cancel(self, batch_id: str) -> None:
        """Ask the scheduler to remove the batch job."""

    def forbid(self, name: str) -> None:
        """Keep a submission under ``name`` that ``find`` does not show yet from ever running
        (a subjob killed while its submission was under way). A batch system shows a job it
        accepted at once, so there is nothing to do; a scheduler that starts its runs a
        moment after accepting them (``local``) stops the run here."""
        return None

    def windows(self) -> list[Window] | None:
        """Which nodes are idle now and for how long (``backends.backfill``), so pilots can
        be sized to start at once; None where the scheduler cannot say."""
        return None


class BatchScheduler(Scheduler):
    """A scheduler reached through its commands, in the manner of PSI/J's batch executors: this
    class runs the commands, types their failures and handles what every scheduler shares;
    a plug-in supplies a directive template and pure hooks that build each command's
    arguments and parse each answer, so its parsing is tested on the tools' own output with
    no server."""

    prefix = ""  # the directive prefix ("#SBATCH"); none for a scheduler that reads none
    template: tuple[str, ...] = ()  # directive lines, formatted with ``fields(job)``
    optional: tuple[tuple[str, str], ...] = ()  # (field, line): the line when the field is set
    # The scheduler's own words for a passing condition ("busy", "timed out", "try again").
    transient: tuple[str, ...] = ()
    # Per command that answers for the jobs it knows and exits non-zero for the others: its
    # words for "no such job".
    absent: dict[str, tuple[str, ...]] = {}
    submit_command: tuple[str, ...] = ()  # the script's path follows, unless on stdin
    script_on_stdin = False  # the submit command reads the script from stdin (LSF)
    cancel_command: tuple[str, ...] = ()  # the batch job's id follows

    def fields(self, job: BatchRequest) -> dict[str, object]:
        """What the directive template may name."""
        minutes = job.wall_time_minutes or 0
        return {
            "name": job.name,
            "workdir": job.workdir,
            "out": stream_file(job.workdir, job.attempt, "out"),
            "err": stream_file(job.workdir, job.attempt, "err"),
            "nodes": job.num_nodes,
            "ppn": job.processes_per_node,
            "procs": job.num_nodes * job.processes_per_node,
            "minutes": minutes,
            "hours": minutes // 60,
            "mins": minutes % 60,
            "queue": job.queue,
            "project": job.project,
        }

    def header(self, job: BatchRequest, **extra: object) -> list[str]:
        """The template's lines, then the site's approved options, one line each."""
        values = self.fields(job) | extra
        lines = [line.format(**values) for line in self.template]
        lines += [line.format(**values) for key, line in self.optional if values[key]]
        return [*lines, *job.options]

    def directives(self, job: BatchRequest) -> list[str]:
        return [f"{self.prefix} {line}" for line in self.header(job)] if self.prefix else []

    def prepare(self, script: Path, job: BatchRequest) -> None:
        """Anything the scheduler needs beside the script before submission; nothing here."""

    def submit_argv(self, script: Path, job: BatchRequest) -> list[str]:
        return [*self.submit_command, *([] if self.script_on_stdin else [str(script)])]

    @abstractmethod
    def parse_submit(self, output: str) -> str | None:
        """The new job's id in the submit command's answer, None if it holds none."""

    @abstractmethod
    def find_argvs(self, name: str) -> list[list[str]]:
        """Commands that list jobs named ``name``, asked in turn until one lists any."""

    def parse_found(self, argv: list[str], output: str, name: str) -> list[str]:
        """Ids in a find command's answer, oldest first: by default one number per line."""
        return [line.strip() for line in output.splitlines() if line.strip().isdigit()]

    @abstractmethod
    def status_argv(self, ids: list[str]) -> list[str]: ...

    @abstractmethod
    def parse_statuses(self, output: str, ids: list[str]) -> dict[str, BatchStatus]: ...

    def history_argv(self, missing: list[str]) -> list[str] | None:
        """Where the scheduler keeps jobs that left the status command's answer; None when it
        keeps them nowhere else."""
        return None

    def parse_history(self, output: str, ids: list[str]) -> dict[str, BatchStatus]:
        return self.parse_statuses(output, ids)

    def cancel_argv(self, batch_id: str) -> list[str]:
        return [*self.cancel_command, batch_id]

    def backfill_argvs(self) -> list[list[str]] | None:
        """Commands whose answers together say which nodes are idle and for how long (node
        states, then what waits for them); None for a scheduler whose tools cannot say."""
        return None

    def parse_backfill(self, outputs: list[str], now: float) -> list[Window]:
        """The windows in the answers of ``backfill_argvs``, in their order; ``now`` is the
        time they were asked at (epoch seconds), for the start times they print."""
        return []

    def answered(self, result: CommandResult) -> bool:
        """Whether a non-zero exit still answered: by default when every error line says "no
        such job" in the command's own words (see ``absent``)."""
        words = [w.lower() for w in self.absent.get(result.argv[0], ())]
        errors = [line.lower() for line in result.stderr.splitlines() if line.strip()]
        return bool(words and errors) and all(any(w in e for w in words) for e in errors)

    def command(self, argv: list[str], what: str, stdin: bytes | None = None) -> str:
        """Run a scheduler command; its output, or the error type its failure deserves: a
        failure in the scheduler's words for a passing condition is a ``TransientError``, any
        other is permanent."""
        result = self.runner.run(argv, timeout=self.site.command_timeout, stdin=stdin)
        if result.ok or self.answered(result):
            return result.stdout
        text = f"{result.stdout}\n{result.stderr}".lower()
        transient = any(t.lower() in text for t in self.transient)
        error = TransientError if transient else PermanentError
        raise error(f"{what}: {argv[0]} exited with code {result.returncode}: {result.tail()}")

    @staticmethod
    def read(what: str, argv: list[str], parse: Callable[..., T], *args: object) -> T:
        """A parse hook's result; an answer it cannot read (json's, ElementTree's or int's
        complaint) is the scheduler's failure, typed as such."""
        try:
            return parse(*args)
        except (ValueError, SyntaxError, KeyError) as exc:
            raise PermanentError(f"{what}: cannot read {argv[0]}'s answer: {exc!r}") from None

    def submit(self, script: Path, job: BatchRequest) -> str:
        self.prepare(script, job)
        argv = self.submit_argv(script, job)
        stdin = script.read_bytes() if self.script_on_stdin else None
        output = self.command(argv, "submit", stdin)
        job_id = self.read("submit", argv, self.parse_submit, output)
        if job_id is None:
            raise PermanentError(f"submit: {argv[0]} answered {output!r}, not a job id")
        return job_id

    def find(self, name: str) -> str | None:
        for argv in self.find_argvs(name):
            output = self.command(argv, "find")
            ids = self.read("find", argv, self.parse_found, argv, output, name)
            if ids:
                return ids[-1]
        return None

    def statuses(self, ids: list[str]) -> dict[str, BatchStatus]:
        if not ids:
            return {}
        argv = self.status_argv(ids)
        output = self.command(argv, "status")
        out = self.read("status", argv, self.parse_statuses, output, ids)
        missing = [i for i in ids if i not in out]
        ended = self.ended(missing) if missing else {}
        out |= {i: ended[i] for i in missing if i in ended}
        return {i: out[i] for i in ids if i in out}

    def ended(self, missing: list[str]) -> dict[str, BatchStatus]:
        """What became of jobs the status command no longer lists."""
        argv = self.history_argv(missing)
        if argv is None:
            return {}
        output = self.command(argv, "status")
        return self.read("status", argv, self.parse_history, output, missing)

    def cancel(self, batch_id: str) -> None:
        self.command(self.cancel_argv(batch_id), "cancel")

    def windows(self) -> list[Window] | None:
        argvs = self.backfill_argvs()
        if argvs is None:
            return None
        asked = time.time()
        outputs = [self.command(argv, "backfill") for argv in argvs]
        return self.read("backfill", argvs[0], self.parse_backfill, outputs, asked)
