"""A private RabbitMQ node (Debian's rabbitmq-server) for the tests, the demo and the
benchmarks, run as the HUST'17 paper's service ran its broker: TLS only, every client logging
in with a certificate from the CA (SASL EXTERNAL, the ``rabbitmq_auth_mechanism_ssl``
plug-in, the login being the certificate's common name), one broker user per site.

Everything is its own: node name, AMQPS, Erlang distribution, epmd and management ports (all
on 127.0.0.1), database, logs, configuration and Erlang cookie in ``directory``; so it runs
beside any other RabbitMQ on the machine and leaves nothing behind.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from edgeceleryapp.errors import ConfigurationError
from edgeceleryapp.throwaway_ca import BrokerTLS, Issued

# Debian installs the real scripts here; /usr/sbin's wrappers switch to the rabbitmq user.
RABBITMQ_BIN = Path("/usr/lib/rabbitmq/bin")
MANAGEMENT_USER = "flower"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class RabbitMQServer:
    """A RabbitMQ node listening for AMQPS on ``port`` (no plaintext listener); ``tls`` holds
    its certificate and the CA that signs its clients'."""

    directory: Path
    tls: BrokerTLS
    port: int = field(default_factory=_free_port)
    management_port: int = field(default_factory=_free_port)
    dist_port: int = field(default_factory=_free_port)
    epmd_port: int = field(default_factory=_free_port)
    management_password: str = field(default_factory=lambda: os.urandom(12).hex())
    process: subprocess.Popen | None = None

    @property
    def node(self) -> str:
        return f"edgecelery{self.port}@localhost"

    @property
    def url(self) -> str:
        return f"amqps://127.0.0.1:{self.port}//"

    @property
    def management_url(self) -> str:
        """The management API with its user, as Flower's ``--broker_api`` takes it."""
        return (
            f"http://{MANAGEMENT_USER}:{self.management_password}"
            f"@127.0.0.1:{self.management_port}/api/"
        )

    @property
    def log(self) -> Path:
        return self.directory / "rabbitmq.log"

    def env(self) -> dict[str, str]:
        d = self.directory
        return {
            **os.environ,
            "HOME": str(d),  # the Erlang cookie lives here
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "ERL_EPMD_PORT": str(self.epmd_port),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
            "RABBITMQ_MNESIA_BASE": str(d / "mnesia"),
            "RABBITMQ_LOG_BASE": str(d / "log"),
            "RABBITMQ_CONFIG_FILE": str(d / "rabbitmq.conf"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(d / "enabled_plugins"),
            "RABBITMQ_PID_FILE": str(d / "rabbitmq.pid"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(d / "advanced.config"),
        }

    def _write_config(self) -> None:
        tls = self.tls
        (self.directory / "rabbitmq.conf").write_text(
            "\n".join(
                [
                    "listeners.tcp = none",
                    f"listeners.ssl.1 = 127.0.0.1:{self.port}",
                    f"ssl_options.cacertfile = {tls.ca.ca_file}",
                    f"ssl_options.certfile = {tls.server.cert_file}",
                    f"ssl_options.keyfile = {tls.server.key_file}",
                    "ssl_options.verify = verify_peer",
                    "ssl_options.fail_if_no_peer_cert = true",
                    "auth_mechanisms.1 = EXTERNAL",
                    "ssl_cert_login_from = common_name",
                    f"management.tcp.port = {self.management_port}",
                    "management.tcp.ip = 127.0.0.1",
                    "log.console = false",
                    "log.file.level = warning",
                    "",
                ]
            )
        )
        (self.directory / "advanced.config").write_text("[].\n")
        (self.directory / "enabled_plugins").write_text(
            "[rabbitmq_management,rabbitmq_auth_mechanism_ssl].\n"
        )

    def ctl(self, *args: str, check: bool = True) -> str:
        """``rabbitmqctl`` against this node."""
        done = subprocess.run(
            [str(RABBITMQ_BIN / "rabbitmqctl"), "-n", self.node, *args],
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=120,
        )
        if check and done.returncode != 0:
            raise RuntimeError(f"rabbitmqctl {' '.join(args)}: {done.stderr or done.stdout}")
        return done.stdout

    def start(self) -> RabbitMQServer:
        """Start the node, wait until it serves, and set up the users: the clients' (the
        certificate in ``tls.client``, full rights) and ``flower`` for the management API."""
        binary = RABBITMQ_BIN / "rabbitmq-server"
        if not binary.exists() or shutil.which("erl") is None:
            raise ConfigurationError(
                "rabbitmq-server: not installed (Debian: apt-get install rabbitmq-server)"
            )
        self.directory.mkdir(parents=True, exist_ok=True)
        self._write_config()
        self.process = subprocess.Popen(
            [str(binary)],
            env=self.env(),
            stdout=self.log.open("a"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 120
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"rabbitmq-server exited; see {self.log}")
            waited = subprocess.run(
                [str(RABBITMQ_BIN / "rabbitmqctl"), "-n", self.node, "await_startup"],
                env=self.env(),
                capture_output=True,
                text=True,
                timeout=120,
            )
            if waited.returncode == 0:
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"rabbitmq-server did not start; see {self.log}")
            time.sleep(0.5)
        self.ctl("delete_user", "guest", check=False)
        self.add_user(self.common_name(self.tls.client), ".*", ".*", ".*")
        self.add_user(MANAGEMENT_USER, "", "", ".*", password=self.management_password)
        self.ctl("set_user_tags", MANAGEMENT_USER, "monitoring")
        return self

    @staticmethod
    def common_name(issued: Issued) -> str:
        from cryptography import x509
        from cryptography.x509.oid import NameOID

        cert = x509.load_pem_x509_certificate(issued.cert_file.read_bytes())
        return str(cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)

    def add_user(
        self,
        name: str,
        configure: str,
        write: str,
        read: str,
        password: str | None = None,
        vhost: str = "/",
    ) -> None:
        """A broker user with these permission patterns on ``vhost``; without a password it
        can log in only by certificate (EXTERNAL)."""
        self.ctl("add_user", name, password or os.urandom(16).hex())
        if password is None:
            self.ctl("clear_password", name)
        self.ctl("set_permissions", "-p", vhost, name, configure, write, read)

    def add_vhost(self, vhost: str) -> str:
        """A virtual host of its own (one per deployment sharing this node), open to the
        clients' certificate and to the management user; its AMQPS URL."""
        self.ctl("add_vhost", vhost)
        for user in (self.common_name(self.tls.client), MANAGEMENT_USER):
            self.ctl("set_permissions", "-p", vhost, user, ".*", ".*", ".*")
        return f"amqps://127.0.0.1:{self.port}/{vhost}"

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.ctl("stop", check=False)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, 9)
                self.process.wait(10)
        # epmd outlives the node; this one is ours (its own port).
        subprocess.run(
            ["epmd", "-port", str(self.epmd_port), "-kill"],
            env=self.env(),
            capture_output=True,
            timeout=30,
            check=False,
        )
