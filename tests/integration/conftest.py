"""A real one-machine deployment for the module: a private Redis on a free loopback port, the
Argo worker (with beat) and one worker per site (each polling its site on its own clock), all
real processes started through the ``edgecelery worker`` command. Tests drive it with the
``edgecelery`` command.

The ``deployment`` fixture runs its module twice: on Redis, and on RabbitMQ over TLS with
client-certificate logins (one private node for the session, a virtual host per module)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from edgeceleryapp.devstack import DevStack, wait_for
from edgeceleryapp.rabbitmq_server import RabbitMQServer
from edgeceleryapp.status_stream import StatusStream
from edgeceleryapp.throwaway_ca import BrokerTLS

SITES = ("alpha", "beta", "gamma")


@dataclass
class Deployment(DevStack):
    """The one-machine stack, driven as an operator would: through the ``edgecelery``
    command."""

    def cli(self, *args: str, stdin: str | None = None, check: bool = True) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "edgeceleryapp.cli", *args],
            env=self.env,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=60,
        )
        if check and done.returncode != 0:
            raise AssertionError(f"edgecelery {' '.join(args)} failed: {done.stderr}")
        return done.stdout

    def submit(self, message: dict[str, Any]) -> int:
        return int(self.cli("argo", "submit", "-q", "-", stdin=json.dumps(message)).strip())

    def show(self, argo_id: int) -> dict[str, Any]:
        return json.loads(self.cli("argo", "show", str(argo_id), "--json"))

    def wait_state(self, argo_id: int, wanted: set[str], timeout: float = 60) -> dict:
        def reached() -> dict | None:
            data = self.show(argo_id)
            return data if data["state"] in wanted else None

        try:
            return wait_for(reached, timeout, f"argo job {argo_id} to reach {wanted}", 0.2)
        except TimeoutError:
            logs = "\n".join(
                f"--- {p.name}\n" + p.read_text()[-3000:]
                for p in sorted((self.root / "logs").glob("*.log"))
            )
            raise AssertionError(f"{self.show(argo_id)}\n{logs}") from None


@contextmanager
def running_deployment(
    root: Path,
    sites: tuple[str, ...],
    site_settings: dict[str, dict[str, Any]] | None = None,
    argo_settings: dict[str, Any] | None = None,
    env_extra: dict[str, str] | None = None,
    poll_interval: float = 0.3,
    status_interval: float = 1.0,
    concurrency: int = 1,
    lease_seconds: float = 3,
    shipped_defaults: bool = False,
    tls: bool = False,
    rabbitmq: RabbitMQServer | None = None,
    extra: str = "",
) -> Iterator[Deployment]:
    """Redis, the Argo worker and one worker per site, with short retries, leases, re-drives
    and intervals so that tests are quick (``shipped_defaults``: only the intervals short;
    ``tls``: Redis over verified TLS with client certificates; ``rabbitmq``: a virtual host on
    that node instead of Redis; ``extra``: more TOML, after the quick settings); stopped again
    afterwards."""
    quick = (
        f"visibility_timeout = 4\nlease_seconds = {lease_seconds}\nredrive_after = 10\n"
        "[retry]\nmax_retries = 3\nbackoff_base = 0.2\nbackoff_max = 1.0"
    )
    with Deployment.running(
        root,
        sites,
        concurrency=concurrency,
        env_extra=env_extra,
        poll_interval=poll_interval,
        status_interval=status_interval,
        extra="\n".join(filter(None, ["" if shipped_defaults else quick, extra])),
        site_settings=site_settings,
        argo_settings=argo_settings,
        tls=tls,
        rabbitmq=rabbitmq,
    ) as dep:
        yield dep


@pytest.fixture(scope="session")
def rabbitmq_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RabbitMQServer]:
    """One private RabbitMQ node (TLS only, EXTERNAL logins) for the whole session: it takes
    some seconds to start."""
    root = tmp_path_factory.mktemp("rabbitmq")
    node = RabbitMQServer(root / "node", BrokerTLS.make(root / "tls"))
    try:
        yield node.start()
    finally:
        node.stop()


@pytest.fixture(scope="module", params=["redis", "rabbitmq"])
def deployment(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Deployment]:
    node = request.getfixturevalue("rabbitmq_node") if request.param == "rabbitmq" else None
    root = tmp_path_factory.mktemp(f"deploy-{request.param}")
    with running_deployment(root, SITES, rabbitmq=node) as dep:
        yield dep


class StatusListener:
    """Every status message for a routing key, as a production system would bind one
    (the HUST'17 paper, 2.2.1, job_status_routing_key), kept in ``bodies``."""

    def __init__(self, url: str, routing_key: str):
        self.bodies: list[dict[str, Any]] = []
        self.stream = StatusStream(
            url, routing_key, self.bodies.append, queue_name=f"test-{routing_key}"
        )

    def drain_until(
        self, predicate: Callable[[list[dict[str, Any]]], bool], timeout: float = 30
    ) -> None:
        def done() -> bool:
            self.stream.drain(0.2)
            return predicate(self.bodies)

        wait_for(done, timeout, "status messages", interval=0)

    def close(self) -> None:
        self.stream.close()
