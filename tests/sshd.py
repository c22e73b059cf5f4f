"""A private sshd on 127.0.0.1 for the tests: Debian's openssh-server with a host key and a
client key made for the session, public-key authentication only."""

from __future__ import annotations

import shutil
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path

from edgeceleryapp.devstack import free_port, wait_for

SSHD = Path("/usr/sbin/sshd")


@dataclass
class SSHServer:
    root: Path
    port: int
    process: subprocess.Popen
    client_key: Path
    known_hosts: Path
    username: str = "root"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)


def keygen(path: Path) -> Path:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)],
        check=True,
        stdin=subprocess.DEVNULL,
    )
    return path


def _banner(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            return sock.recv(4).startswith(b"SSH-")
    except OSError:
        return False


def start_sshd(root: Path, extra_config: tuple[str, ...] = ()) -> SSHServer:
    """``extra_config``: more sshd_config lines (e.g. ``SetEnv`` for a login node's
    environment)."""
    if not SSHD.exists() or shutil.which("ssh-keygen") is None:
        raise RuntimeError("sshd: not installed; scripts/setup.sh installs openssh-server")
    root.mkdir(parents=True, exist_ok=True)
    host_key = keygen(root / "host_ed25519")
    client_key = keygen(root / "client_ed25519")
    (root / "authorized_keys").write_text(client_key.with_suffix(".pub").read_text())
    port = free_port()
    config = root / "sshd_config"
    config.write_text(
        "\n".join(
            [
                f"Port {port}",
                "ListenAddress 127.0.0.1",
                f"HostKey {host_key}",
                f"PidFile {root / 'sshd.pid'}",
                f"AuthorizedKeysFile {root / 'authorized_keys'}",
                "PubkeyAuthentication yes",
                "PasswordAuthentication no",
                "KbdInteractiveAuthentication no",
                "PermitRootLogin prohibit-password",
                "UsePAM no",
                "StrictModes no",
                "LogLevel ERROR",
                *extra_config,
            ]
        )
        + "\n"
    )
    Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege-separation directory
    process = subprocess.Popen(
        [str(SSHD), "-D", "-e", "-f", str(config)],
        stdout=(root / "sshd.log").open("w"),
        stderr=subprocess.STDOUT,
    )
    wait_for(lambda: process.poll() is not None or _banner(port), 10, "sshd to answer")
    if process.poll() is not None:
        raise RuntimeError(f"sshd exited: {(root / 'sshd.log').read_text()}")
    public = host_key.with_suffix(".pub").read_text().split()
    known_hosts = root / "known_hosts"
    known_hosts.write_text(f"[127.0.0.1]:{port} {public[0]} {public[1]}\n")
    return SSHServer(root, port, process, client_key, known_hosts)
