"""Run commands on this host with subprocess (no shell)."""

from __future__ import annotations

import os
import subprocess

from backends.runners.base import Command, CommandResult, Runner
from edgeceleryapp.errors import PermanentError, TransientError


class LocalRunner(Runner):
    def execute(self, command: Command) -> CommandResult:
        argv, timeout, stdin, env = command.argv, command.timeout, command.stdin, command.env
        try:
            done = subprocess.run(
                argv,
                cwd=command.cwd,
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

    def read_file(self, path: str, offset: int = 0, limit: int | None = None) -> bytes | None:
        try:
            with open(path, "rb") as fh:
                size = os.fstat(fh.fileno()).st_size
                fh.seek(max(0, size + offset) if offset < 0 else offset)
                return fh.read() if limit is None else fh.read(limit)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise PermanentError(f"cannot read {path}: {exc.strerror}") from None
