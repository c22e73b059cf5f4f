"""A one-machine service: a private Redis on a free loopback port and worker processes.

Used by ``edgecelery demo`` and by the integration tests, so both run the real thing: the real
broker, real ``edgecelery worker`` processes, the real poll schedule.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import redis

from edgeceleryapp.errors import ConfigurationError


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(check, timeout: float, what: str, interval: float = 0.05):  # type: ignore[no-untyped-def]
    """Poll ``check`` until it returns a true value; raise with ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


@dataclass
class RedisServer:
    """redis-server from the system (Debian's redis-server), bound to 127.0.0.1 only."""

    directory: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        binary = shutil.which("redis-server")
        if binary is None:
            raise ConfigurationError(
                "redis-server: not installed (Debian: apt-get install redis-server)"
            )
        self.directory.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.directory),
                "--protected-mode",
                "yes",
            ],
            stdout=(self.directory / "redis.log").open("w"),
            stderr=subprocess.STDOUT,
        )
        client = redis.Redis(host="127.0.0.1", port=self.port, socket_connect_timeout=0.2)

        def ping() -> bool:
            if self.process and self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited; see {self.directory / 'redis.log'}")
            try:
                return bool(client.ping())
            except redis.ConnectionError:
                return False

        wait_for(ping, 10, "redis-server to answer")
        return self

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)


@dataclass
class Worker:
    """An ``edgecelery worker`` process for one site, or for the Argo service."""

    name: str
    env: dict[str, str]
    log: Path
    concurrency: int = 1
    # Start with plain ``celery -A edgeceleryapp worker`` instead of our wrapper.
    plain_celery: bool = False
    process: subprocess.Popen | None = None

    def start(self) -> Worker:
        argv = [
            sys.executable,
            "-m",
            "edgeceleryapp.cli",
            "worker",
            "-c",
            str(self.concurrency),
            "--loglevel",
            "INFO",
        ]
        if self.plain_celery:
            argv = [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "edgeceleryapp",
                "worker",
                "-c",
                str(self.concurrency),
                "-Q",
                f"site.{self.name}",
                "-n",
                f"{self.name}@%h",
                "--without-gossip",
                "--without-mingle",
                "--loglevel",
                "INFO",
            ]
        elif self.name == "argo":
            argv += ["--argo", "--beat-schedule", str(self.log.with_suffix(".beat"))]
        else:
            argv += ["--site", self.name]
        self.log.parent.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            argv,
            env=self.env,
            stdout=self.log.open("a"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        return self

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Signal the whole process group: the Celery parent and its pool children."""
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, sig)
            self.process.wait(30)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()


def wait_for_workers(broker_url: str, names: list[str], timeout: float = 60) -> None:
    """Until every named worker answers a broadcast ping through the broker at ``broker_url``."""
    from celery import Celery

    wanted = {f"{n}@{socket.gethostname()}" for n in names}
    probe = Celery("edgecelery-probe", broker=broker_url)

    def answered() -> bool:
        replies = probe.control.ping(timeout=0.5) or []
        return wanted <= {name for reply in replies for name in reply}

    try:
        wait_for(answered, timeout, f"workers {sorted(wanted)}", interval=0.2)
    finally:
        probe.close()
