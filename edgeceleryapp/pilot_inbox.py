"""The hand-off between a site worker (on the login node) and a pilot's launcher (in the
allocation) through the shared file system: nothing in the allocation needs the broker or the
database.

A pilot's directory holds::

    pilot.json          what the launcher needs (size, wall time, idle exit), from the worker
    inbox/<name>.json   assignments, written by the worker under a temporary name and renamed
    running/<name>.json claimed by the launcher: renamed out of inbox/, so taken once
    done/<name>.json    the launcher is finished with it (its exit code is written first)
    returned/<name>.json taken back by the worker before the launcher claimed it (the pilot
                        ended first, or the subjob was killed): nothing of it ran
    cancelled/<name>    the subjob was killed: the launcher kills its run, or never starts it
    heartbeat           touched by the launcher while it lives
    ended               the launcher's last word: why it ended

An assignment is named after the subjob and its attempt (``<subjob>a<attempt>.json``) and its
exit code goes to a file of that attempt in the subjob's work directory: a late result from a
pilot taken for dead belongs to an attempt the poller no longer reads, so it is never counted
twice.

Pure of the service: files and JSON only, so the launcher imports nothing else.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from backends.batchscript import CONTROL_DIR, read_int

INBOX, RUNNING, DONE, RETURNED = "inbox", "running", "done", "returned"
CANCELLED = "cancelled"
CONFIG, HEARTBEAT, ENDED = "pilot.json", "heartbeat", "ended"


@dataclass(frozen=True)
class PilotConfig:
    pilot_id: int
    nodes: int
    slots_per_node: int
    wall_seconds: float
    idle_exit_seconds: float


@dataclass(frozen=True)
class Assignment:
    subjob_id: int
    attempt: int
    workdir: str
    argv: list[str]
    num_nodes: int = 1
    processes_per_node: int = 1
    wall_time_minutes: int | None = None
    env: dict[str, str] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return assignment_name(self.subjob_id, self.attempt)


def assignment_name(subjob_id: int, attempt: int) -> str:
    return f"{subjob_id}a{attempt}.json"


def exit_code_file(workdir: Path, attempt: int) -> Path:
    """Where a pilot writes the exit code of one attempt of a subjob."""
    return Path(workdir) / CONTROL_DIR / f"exitcode.a{attempt}"


def read_exit_code(workdir: Path, attempt: int) -> int | None:
    return read_int(exit_code_file(workdir, attempt))


def _write_atomically(path: Path, text: str) -> None:
    part = path.with_name(f".{path.name}.part")
    part.write_text(text)
    os.replace(part, path)


def create(directory: Path, config: PilotConfig) -> None:
    for folder in (INBOX, RUNNING, DONE, RETURNED, CANCELLED, CONTROL_DIR):
        (directory / folder).mkdir(parents=True, exist_ok=True)
    _write_atomically(directory / CONFIG, json.dumps(asdict(config)))


def read_config(directory: Path) -> PilotConfig:
    return PilotConfig(**json.loads((directory / CONFIG).read_text()))


def where(directory: Path, name: str) -> str | None:
    """Which folder holds the assignment now, or None."""
    for folder in (DONE, RUNNING, INBOX, RETURNED):
        if (directory / folder / name).exists():
            return folder
    return None


def post(directory: Path, assignment: Assignment) -> bool:
    """Put an assignment in the inbox unless the pilot has it already; whether it was put."""
    if where(directory, assignment.name) is not None:
        return False
    _write_atomically(directory / INBOX / assignment.name, json.dumps(asdict(assignment)))
    return True


def waiting(directory: Path) -> list[str]:
    """The inbox's assignments, oldest subjob first."""
    names = [p.name for p in (directory / INBOX).glob("*.json")]
    return sorted(names, key=lambda n: tuple(int(x) for x in n[:-5].split("a")))


def read(directory: Path, folder: str, name: str) -> Assignment:
    return Assignment(**json.loads((directory / folder / name).read_text()))


def _out_of_inbox(directory: Path, name: str, folder: str) -> bool:
    """Rename an assignment out of the inbox into ``folder``: of the launcher's claim and the
    worker's take-back, exactly one wins."""
    try:
        os.rename(directory / INBOX / name, directory / folder / name)
    except FileNotFoundError:
        return False
    return True


def claim(directory: Path, name: str) -> bool:
    """Take an assignment out of the inbox for the launcher to run."""
    return _out_of_inbox(directory, name, RUNNING)


def take_back(directory: Path, name: str) -> bool:
    """Take an unclaimed assignment out of the inbox: True means the launcher never had it,
    so nothing of it ran."""
    return _out_of_inbox(directory, name, RETURNED)


def cancel(directory: Path, name: str) -> bool:
    """A killed subjob: its mark first (so a launcher that claims it in the meantime still
    kills it), then its assignment taken back if still unclaimed. True if it never ran."""
    (directory / CANCELLED).mkdir(exist_ok=True)
    (directory / CANCELLED / name).touch()
    return take_back(directory, name)


def cancelled(directory: Path, name: str) -> bool:
    return (directory / CANCELLED / name).exists()


def finish(directory: Path, name: str) -> None:
    os.replace(directory / RUNNING / name, directory / DONE / name)


def write_exit_code(assignment: Assignment, code: int) -> None:
    _write_atomically(exit_code_file(Path(assignment.workdir), assignment.attempt), f"{code}\n")


def beat(directory: Path) -> None:
    path = directory / HEARTBEAT
    path.touch()
    os.utime(path)


def heartbeat_time(directory: Path) -> float | None:
    """When the launcher last beat (the file's modification time), None before its first."""
    try:
        return (directory / HEARTBEAT).stat().st_mtime
    except FileNotFoundError:
        return None


def end(directory: Path, reason: str) -> None:
    _write_atomically(directory / ENDED, reason + "\n")


def ended(directory: Path) -> str | None:
    try:
        return (directory / ENDED).read_text().strip() or "ended"
    except FileNotFoundError:
        return None
