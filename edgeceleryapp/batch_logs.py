"""A subjob's batch output: where each attempt's standard output and error lie, and reading
them where they lie.

The batch system writes them into the subjob's work directory at its site
(``backends.batchscript.stream_file``: one pair per attempt, so a resubmission or a retry
never overwrites what explains the failure before it). That directory may be on a login node
this process does not mount, so every read goes through the site's runner (this host, or the
login node over SSH): ``edgecelery job logs`` and the job browser work for any site the
settings name.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select

from backends.batchscript import STREAMS, job_workdir, stream_file
from backends.runners import runner_for
from edgeceleryapp import states
from edgeceleryapp.db import read_scope
from edgeceleryapp.errors import (
    ConfigurationError,
    EdgeCeleryError,
    NotFound,
    ValidationFailed,
)
from edgeceleryapp.models import SubJob
from edgeceleryapp.settings import get_settings

STREAM_NAMES = {"out": "standard output", "err": "standard error"}
# Before its batch job ends an attempt may still write: ``job logs --follow`` keeps reading.
_BEFORE_END = frozenset(states.BALSAM_PATH[: states.BALSAM_PATH.index("EXECUTION_FINISHED")])


@dataclass(frozen=True)
class BatchLog:
    """One stream of one attempt of one subjob, and where the subjob stands now."""

    subjob_id: int
    site: str
    state: str
    attempt: int
    attempts: int  # the subjob's attempt now: 1, or more after resubmissions and retries
    stream: str
    path: str  # at the site, as its runner reads it

    @property
    def still_writing(self) -> bool:
        """The attempt's batch job may write more: it is the subjob's current attempt and
        has not ended."""
        return self.attempt == self.attempts and self.state in _BEFORE_END

    def describe(self) -> str:
        return f"job {self.subjob_id} attempt {self.attempt} {STREAM_NAMES[self.stream]}"


def workdir(site: str, subjob_id: int) -> str | None:
    """A subjob's work directory at its site; None when the settings no longer name the site."""
    try:
        return str(job_workdir(get_settings().site(site).workdir, subjob_id))
    except ConfigurationError:
        return None


def _subjob(subjob_id: int) -> tuple[str, str, int]:
    with read_scope() as s:
        row = s.execute(
            select(SubJob.site, SubJob.state, SubJob.attempt).where(SubJob.id == subjob_id)
        ).first()
    if row is None:
        raise NotFound(f"no job {subjob_id}")
    return row.site, row.state, row.attempt


def locate(subjob_id: int, attempt: int | None = None, stream: str = "out") -> BatchLog:
    """The file of ``stream`` for ``attempt`` (default: the latest attempt that wrote one).
    ValidationFailed names a bad attempt or stream; NotFound an unknown job."""
    if stream not in STREAMS:
        raise ValidationFailed([("stream", f"one of {', '.join(STREAMS)}, not {stream!r}")])
    site, state, attempts = _subjob(subjob_id)
    if attempt is not None and not 1 <= attempt <= attempts:
        have = "attempt 1 only" if attempts == 1 else f"attempts 1 to {attempts}"
        raise ValidationFailed([("attempt", f"job {subjob_id} has {have}, not {attempt}")])
    root = workdir(site, subjob_id)
    if root is None:
        raise NotFound(f"job {subjob_id} ran at site {site!r}, which the settings do not name")

    def at(n: int) -> BatchLog:
        path = str(stream_file(Path(root), n, stream))
        return BatchLog(subjob_id, site, state, n, attempts, stream, path)

    if attempt is not None:
        return at(attempt)
    # A retried or resubmitted subjob waits for its new batch job: the attempt before it
    # holds the output that tells why it is running again.
    for n in range(attempts, 0, -1):
        if read(at(n), limit=0) is not None:
            return at(n)
    return at(attempts)


def read(log: BatchLog, offset: int = 0, limit: int | None = None) -> bytes | None:
    """The file's bytes from ``offset`` (negative: from the end), at most ``limit``; None
    while the batch system has not created it."""
    runner = runner_for(get_settings().site(log.site))
    return runner.read_file(log.path, offset, limit)


def absent(log: BatchLog) -> str:
    """Why there is nothing to show, in words a user can act on."""
    if log.still_writing:
        return f"{log.describe()}: not written yet (the job is {log.state}); try --follow"
    return (
        f"{log.describe()}: no file at {log.path} (the job is {log.state}; its batch job "
        "never started, or the scheduler was told to write elsewhere)"
    )


@dataclass(frozen=True)
class Tail:
    """The end of one stream of a subjob's latest attempt, for the job page."""

    subjob_id: int
    attempt: int
    stream: str
    path: str
    text: str | None  # None: no such file; the reason is in ``problem`` when reading failed
    problem: str = ""


def tails(subjob_id: int, size: int) -> list[Tail]:
    """The last ``size`` bytes of both streams of the subjob's latest attempt."""
    out = []
    for stream in STREAMS:
        attempt, path = 0, ""
        try:
            log = locate(subjob_id, stream=stream)
            attempt, path = log.attempt, log.path
            data = read(log, -size)
        except EdgeCeleryError as exc:  # an unreachable site must not take the page with it
            out.append(Tail(subjob_id, attempt, stream, path, None, str(exc)))
            continue
        text = None if data is None else data.decode(errors="replace")
        out.append(Tail(subjob_id, attempt, stream, path, text))
    return out
