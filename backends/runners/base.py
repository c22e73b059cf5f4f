"""The command-runner interface: an argument list in, exit status and output out.

Commands are always argument lists, never shell strings; a runner that reaches a remote host
must keep it that way (quote each argument for the remote side, never join job text).
"""

from __future__ import annotations

import base64
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from edgeceleryapp.errors import PermanentError
from edgeceleryapp.settings import SiteSettings

# What coreutils and busybox say for a file that is not there.
NO_SUCH_FILE = "no such file"


@dataclass(frozen=True)
class CommandResult:
    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def tail(self, limit: int = 800) -> str:
        """The end of the output, for a failure reason a person can act on."""
        text = (self.stderr.strip() or self.stdout.strip())[-limit:]
        return text or "(no output)"


@dataclass(frozen=True)
class Command:
    """One command as ``run`` hands it on: the arguments strings, the site's time-out applied."""

    argv: tuple[str, ...]
    cwd: str | None
    env: Mapping[str, str] | None
    timeout: float
    stdin: bytes | None


class Runner(ABC):
    def __init__(self, site: SiteSettings):
        self.site = site

    def run(
        self,
        argv: Sequence[str],
        *,
        cwd: str | None = None,
        env: Mapping[str, str] | None = None,
        timeout: float | None = None,
        stdin: bytes | None = None,
    ) -> CommandResult:
        """Run ``argv``; a time-out raises ``TransientError``, a missing program
        ``PermanentError``. A non-zero exit is returned, not raised: the caller knows what it
        means."""
        argv = tuple(str(a) for a in argv)
        return self.execute(Command(argv, cwd, env, timeout or self.site.command_timeout, stdin))

    @abstractmethod
    def execute(self, command: Command) -> CommandResult:
        """``run`` for this runner's kind of host."""

    def read_file(self, path: str, offset: int = 0, limit: int | None = None) -> bytes | None:
        """Bytes of a file on this runner's host, from ``offset`` (a negative one counts from
        the end, as for the last lines of a log), at most ``limit`` of them; None when there
        is no such file. Output files live where the batch job ran, which may be a login node
        this process does not mount.

        This default asks the host for the whole file in base64 (binary output survives the
        text a command returns); the ``local`` and ``ssh`` runners read only what is asked."""
        result = self.run(["base64", "--", path])
        if not result.ok:
            if NO_SUCH_FILE in result.stderr.lower():
                return None
            raise PermanentError(f"cannot read {path}: {result.tail()}")
        return window(base64.b64decode(result.stdout), offset, limit)


def window(data: bytes, offset: int, limit: int | None) -> bytes:
    """``data[offset:]``, cut to ``limit`` bytes; a negative offset counts from the end."""
    start = max(0, len(data) + offset) if offset < 0 else offset
    return data[start : None if limit is None else start + limit]
