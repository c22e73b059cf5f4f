"""Run commands on a site's login node over SSH (paramiko), for a worker that does not run
there itself. Connections are those of backends/ssh_connection.py: key
authentication, checked host keys, one per login node and worker process.

Commands stay argument lists: each argument is quoted for the remote shell with shlex.quote,
so job text is never interpreted there either.
"""

from __future__ import annotations

import errno
import shlex
from collections.abc import Mapping, Sequence

import paramiko

from backends.runners.base import Command, CommandResult, Runner
from backends.ssh_connection import Connections
from edgeceleryapp.errors import ConfigurationError, PermanentError, TransientError
from edgeceleryapp.settings import SiteSettings

connections = Connections()


def remote_command(argv: Sequence[str], cwd: str | None, env: Mapping[str, str] | None) -> str:
    """The one string SSH carries: every part quoted, the environment set with env(1)."""
    command = shlex.join(argv)
    if env:
        command = (
            shlex.join(["env", *(f"{k}={v}" for k, v in sorted(env.items()))]) + " " + (command)
        )
    if cwd:
        command = f"cd -- {shlex.quote(cwd)} && {command}"
    return command


class SSHRunner(Runner):
    def __init__(self, site: SiteSettings):
        super().__init__(site)
        if site.ssh is None:
            raise ConfigurationError("ssh: runner = 'ssh' needs an [sites.NAME.ssh] table")
        self.ssh = site.ssh
        self.key = (self.ssh.host, self.ssh.port, self.ssh.username)

    def execute(self, command: Command) -> CommandResult:
        argv, timeout, stdin = command.argv, command.timeout, command.stdin
        remote = remote_command(argv, command.cwd, command.env)
        client = connections.get(self.key, self.ssh)
        try:
            channel_in, channel_out, channel_err = client.exec_command(remote, timeout=timeout)
            if stdin is not None:
                channel_in.write(stdin)
            channel_in.channel.shutdown_write()
            out = channel_out.read()
            err = channel_err.read()
            code = channel_out.channel.recv_exit_status()
        except TimeoutError:
            connections.drop(self.key)  # the channel is in an unknown state; start clean next time
            raise TransientError(f"{argv[0]}: no answer within {timeout}s (ssh)") from None
        except (paramiko.SSHException, OSError, EOFError) as exc:
            connections.drop(self.key)
            raise TransientError(f"{argv[0]}: ssh connection lost: {exc}") from None
        return CommandResult(argv, code, out.decode(errors="replace"), err.decode(errors="replace"))

    def read_file(self, path: str, offset: int = 0, limit: int | None = None) -> bytes | None:
        """Read over SFTP on the runner's connection: binary-safe, and only the bytes asked
        for (the end of a large log costs its size, not the whole file). A login node whose
        sshd offers no SFTP is read with a command instead (the runner's default)."""
        client = connections.get(self.key, self.ssh)
        try:
            sftp = client.open_sftp()
        except paramiko.SSHException:
            return super().read_file(path, offset, limit)
        try:
            with sftp, sftp.open(path, "rb") as fh:
                size = fh.stat().st_size or 0
                fh.seek(max(0, size + offset) if offset < 0 else offset)
                return fh.read() if limit is None else fh.read(limit)
        except FileNotFoundError:
            return None
        except PermissionError as exc:
            raise PermanentError(f"cannot read {path} (ssh): {exc}") from None
        except OSError as exc:
            if exc.errno == errno.ENOENT:
                return None
            connections.drop(self.key)
            raise TransientError(f"cannot read {path}: ssh connection lost: {exc}") from None
        except (paramiko.SSHException, EOFError) as exc:
            connections.drop(self.key)
            raise TransientError(f"cannot read {path}: ssh connection lost: {exc}") from None
