"""Run commands on a site's login node over SSH (paramiko), for a worker that does not run
there itself. Key authentication only; the host key must be in the configured known_hosts file
(never accepted on first sight). One connection per site and worker process, reused, and
opened again when it drops.

Commands stay argument lists: each argument is quoted for the remote shell with shlex.quote,
so job text is never interpreted there either.
"""

from __future__ import annotations

import shlex
import threading
from collections.abc import Mapping, Sequence

import paramiko

from backends.runners.base import CommandResult, Runner
from edgeceleryapp.errors import ConfigurationError, PermanentError, TransientError
from edgeceleryapp.settings import SiteSettings, SSHSettings

_clients: dict[tuple[str, int, str], paramiko.SSHClient] = {}
_lock = threading.Lock()


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


def _connect(ssh: SSHSettings) -> paramiko.SSHClient:
    client = paramiko.SSHClient()
    client.load_host_keys(str(ssh.known_hosts))
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    try:
        return _open(client, ssh)
    except Exception:
        client.close()  # a failed attempt leaves no half-open transport behind
        raise


def _open(client: paramiko.SSHClient, ssh: SSHSettings) -> paramiko.SSHClient:
    try:
        client.connect(
            ssh.host,
            port=ssh.port,
            username=ssh.username,
            key_filename=str(ssh.key_file),
            timeout=ssh.connect_timeout,
            banner_timeout=ssh.connect_timeout,
            auth_timeout=ssh.connect_timeout,
            allow_agent=False,
            look_for_keys=False,
        )
    except paramiko.BadHostKeyException as exc:
        raise PermanentError(f"ssh {ssh.host}:{ssh.port}: host key does not match: {exc}") from None
    except paramiko.AuthenticationException as exc:
        raise PermanentError(f"ssh {ssh.host}:{ssh.port}: authentication refused: {exc}") from None
    except paramiko.SSHException as exc:
        if "not found in known_hosts" in str(exc):
            raise PermanentError(
                f"ssh {ssh.host}:{ssh.port}: host key unknown (add it to {ssh.known_hosts})"
            ) from None
        raise TransientError(f"ssh {ssh.host}:{ssh.port}: {exc}") from None
    except (TimeoutError, OSError) as exc:
        raise TransientError(f"ssh {ssh.host}:{ssh.port}: {exc}") from None
    return client


class SSHRunner(Runner):
    def __init__(self, site: SiteSettings):
        super().__init__(site)
        if site.ssh is None:
            raise ConfigurationError("ssh: runner = 'ssh' needs an [sites.NAME.ssh] table")
        self.ssh = site.ssh
        self.key = (self.ssh.host, self.ssh.port, self.ssh.username)

    def _client(self) -> paramiko.SSHClient:
        with _lock:
            client = _clients.get(self.key)
            transport = client.get_transport() if client else None
            if client is None or transport is None or not transport.is_active():
                if client is not None:
                    client.close()
                client = _clients[self.key] = _connect(self.ssh)
            return client

    def _drop(self) -> None:
        with _lock:
            client = _clients.pop(self.key, None)
        if client is not None:
            client.close()

    def run(
        self,
        argv: Sequence[str],
        *,
        cwd: str | None = None,
        env: Mapping[str, str] | None = None,
        timeout: float | None = None,
        stdin: bytes | None = None,
    ) -> CommandResult:
        argv = tuple(str(a) for a in argv)
        timeout = timeout or self.site.command_timeout
        command = remote_command(argv, cwd, env)
        client = self._client()
        try:
            channel_in, channel_out, channel_err = client.exec_command(command, timeout=timeout)
            if stdin is not None:
                channel_in.write(stdin)
            channel_in.channel.shutdown_write()
            out = channel_out.read()
            err = channel_err.read()
            code = channel_out.channel.recv_exit_status()
        except TimeoutError:
            self._drop()  # the channel is in an unknown state; start clean next time
            raise TransientError(f"{argv[0]}: no answer within {timeout}s (ssh)") from None
        except (paramiko.SSHException, OSError, EOFError) as exc:
            self._drop()
            raise TransientError(f"{argv[0]}: ssh connection lost: {exc}") from None
        return CommandResult(argv, code, out.decode(errors="replace"), err.decode(errors="replace"))
