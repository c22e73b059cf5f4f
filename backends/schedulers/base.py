"""The scheduler plug-in interface, in the manner of PSI/J's executors: a plug-in says how to
render a batch script, how to build each command, and how to parse each answer.

Batch jobs are named after the subjob and attempt (``BatchRequest.name``) so that ``find`` can
tell whether a submission already happened before the worker crashed.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from backends.batchscript import render_body
from backends.runners.base import CommandResult, Runner
from edgeceleryapp.errors import PermanentError, TransientError
from edgeceleryapp.settings import SiteSettings

# What a plug-in maps its scheduler's native states to.
QUEUED = "QUEUED"
RUNNING = "RUNNING"
FINISHED = "EXECUTION_FINISHED"
FAILED = "FAILED"  # ended for a resource-side reason: node failure, preemption, cancelled...

# Why a batch job ended badly, in the scheduler's terms mapped to ours. A site's
# ``resubmit_on`` setting lists the causes that earn a new attempt (aCT: resource-side errors
# are resubmitted, job errors are propagated).
NODE_FAIL = "NODE_FAIL"
BOOT_FAIL = "BOOT_FAIL"
PREEMPTED = "PREEMPTED"
TIMEOUT = "TIMEOUT"
CANCELLED = "CANCELLED"
OUT_OF_MEMORY = "OUT_OF_MEMORY"


@dataclass(frozen=True)
class BatchRequest:
    """Everything a scheduler needs to submit one subjob attempt."""

    name: str
    workdir: Path
    argv: list[str]
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

    def command(
        self,
        argv: list[str],
        what: str,
        transient: tuple[str, ...] = (),
        *,
        absent: tuple[str, ...] = (),
        stdin: bytes | None = None,
        answered: Callable[[CommandResult], bool] | None = None,
    ) -> str:
        """Run a scheduler command; its output, or the error type its failure deserves.

        The tools answer for the jobs they know and complain about the others: a non-zero exit
        whose every error line says "no such job" (one of ``absent``), or that ``answered``
        accepts, still returns the output. Otherwise a failure whose output contains one of
        ``transient`` (the scheduler's own words for "busy", "timed out", "try again") is a
        ``TransientError``, and any other is permanent.
        """
        result = self.runner.run(argv, timeout=self.site.command_timeout, stdin=stdin)
        if result.ok or (answered is not None and answered(result)):
            return result.stdout
        errors = [line.lower() for line in result.stderr.splitlines() if line.strip()]
        if absent and errors and all(any(a.lower() in e for a in absent) for e in errors):
            return result.stdout
        text = f"{result.stdout}\n{result.stderr}".lower()
        error = TransientError if any(t.lower() in text for t in transient) else PermanentError
        raise error(f"{what}: {argv[0]} exited with code {result.returncode}: {result.tail()}")

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
