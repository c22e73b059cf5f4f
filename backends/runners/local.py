"""Run commands on this host with subprocess (no shell)."""

from __future__ import annotations

import subprocess
from collections.abc import Mapping

from backends.runners.base import CommandResult, Runner
from edgeceleryapp.errors import PermanentError, TransientError


class LocalRunner(Runner):
    def execute(
        self,
        argv: tuple[str, ...],
        cwd: str | None,
        env: Mapping[str, str] | None,
        timeout: float,
        stdin: bytes | None,
    ) -> CommandResult:
        try:
            done = subprocess.run(
                argv,
                cwd=cwd,
                env=dict(env) if env is not None else None,
                input=stdin,
                stdin=None if stdin is not None else subprocess.DEVNULL,
                capture_output=True,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise TransientError(f"{argv[0]}: no answer within {timeout}s") from None
        except FileNotFoundError:
            raise PermanentError(f"{argv[0]}: no such program") from None
        except PermissionError:
            raise PermanentError(f"{argv[0]}: not executable") from None
        return CommandResult(
            argv,
            done.returncode,
            done.stdout.decode(errors="replace"),
            done.stderr.decode(errors="replace"),
        )
