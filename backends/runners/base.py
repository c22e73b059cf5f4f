"""The command-runner interface: an argument list in, exit status and output out.

Commands are always argument lists, never shell strings; a runner that reaches a remote host
must keep it that way (quote each argument for the remote side, never join job text).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from edgeceleryapp.settings import SiteSettings


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
