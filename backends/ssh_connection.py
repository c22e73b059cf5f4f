"""SSH connections (paramiko) for the runner that reaches a login node and for scp:// and
sftp:// transfers: key authentication only, the host key checked against the configured
known_hosts file (never accepted on first sight), and one connection per key and process,
reused and opened again when it drops.
"""

from __future__ import annotations

import threading
from collections.abc import Hashable

import paramiko

from edgeceleryapp.errors import PermanentError, TransientError
from edgeceleryapp.settings import SSHSettings


def connect(ssh: SSHSettings) -> paramiko.SSHClient:
    """A new connection; refusals a retry cannot cure are permanent, the rest transient."""
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


class Connections:
    """This process's open connections, one per key: opening one costs a key exchange and an
    authentication, so every command or transfer to the same place shares it."""

    def __init__(self) -> None:
        self.clients: dict[Hashable, paramiko.SSHClient] = {}
        self._lock = threading.Lock()

    def get(self, key: Hashable, ssh: SSHSettings) -> paramiko.SSHClient:
        """The live connection for ``key``, opened (again) if there is none or it dropped."""
        with self._lock:
            client = self.clients.get(key)
            transport = client.get_transport() if client else None
            if client is None or transport is None or not transport.is_active():
                if client is not None:
                    client.close()
                client = self.clients[key] = connect(ssh)
            return client

    def drop(self, key: Hashable) -> None:
        """Forget and close a connection in an unknown state; the next ``get`` starts clean."""
        with self._lock:
            client = self.clients.pop(key, None)
        if client is not None:
            client.close()
