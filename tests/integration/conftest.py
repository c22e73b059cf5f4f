"""A real one-machine deployment for the module: a private Redis on a free loopback port, the
Argo worker (with the beat poll schedule) and one worker per site, all real processes started
through the ``edgecelery worker`` command. Tests drive it with the ``edgecelery`` command."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from kombu import Connection, Queue

from edgeceleryapp.cli.demo import write_config
from edgeceleryapp.db import init_db, reset_engine
from edgeceleryapp.devstack import RedisServer, Worker, wait_for, wait_for_workers
from edgeceleryapp.settings import reset_settings
from edgeceleryapp.status_outbox import status_exchange

SITES = ("alpha", "beta", "gamma")


@dataclass
class Deployment:
    root: Path
    redis: RedisServer
    env: dict[str, str]
    workers: dict[str, Worker] = field(default_factory=dict)

    @property
    def data(self) -> Path:
        return self.root / "data"

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
        return int(self.cli("argo", "submit", "-", stdin=json.dumps(message)).strip())

    def start_worker(self, name: str, plain_celery: bool = False) -> Worker:
        log = self.root / "logs" / f"{name}.log"
        worker = Worker(name, self.env, log, plain_celery=plain_celery).start()
        self.workers[name] = worker
        wait_for_workers(self.redis.url, [name])
        return worker

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
) -> Iterator[Deployment]:
    """Redis, the Argo worker and one worker per site, stopped again afterwards."""
    redis = RedisServer(root / "redis").start()
    config = write_config(
        root,
        redis.url,
        sites,
        poll_interval=poll_interval,
        status_interval=status_interval,
        extra="visibility_timeout = 4\n[retry]\nmax_retries = 3\nbackoff_base = 0.2\n"
        "backoff_max = 1.0",
        site_settings=site_settings,
        argo_settings=argo_settings,
    )
    (root / "data").mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGECELERY_")}
    env.update(env_extra or {})
    env["EDGECELERY_CONFIG"] = str(config)
    saved = os.environ.get("EDGECELERY_CONFIG")
    os.environ["EDGECELERY_CONFIG"] = str(config)
    reset_settings()
    reset_engine()
    init_db()
    dep = Deployment(root, redis, env)
    try:
        for name in ("argo", *sites):
            log = root / "logs" / f"{name}.log"
            dep.workers[name] = Worker(name, env, log, concurrency=concurrency).start()
        wait_for_workers(redis.url, ["argo", *sites])
        yield dep
    finally:
        for worker in dep.workers.values():
            worker.stop()
        redis.stop()
        reset_engine()
        if saved is None:
            os.environ.pop("EDGECELERY_CONFIG", None)
        else:
            os.environ["EDGECELERY_CONFIG"] = saved
        reset_settings()


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    with running_deployment(tmp_path_factory.mktemp("deploy"), SITES) as dep:
        yield dep


class StatusListener:
    """A kombu consumer bound to a routing key on the status exchange, as a production system
    would bind one (seed 000 2.2.1, job_status_routing_key)."""

    def __init__(self, url: str, routing_key: str):
        self.conn = Connection(url)
        self.queue = Queue(
            f"test-{routing_key}",
            exchange=status_exchange(),
            routing_key=routing_key,
            auto_delete=True,
        )
        self.bodies: list[dict[str, Any]] = []
        self.consumer = self.conn.Consumer(self.queue, callbacks=[self._on], accept=["json"])
        self.consumer.consume()

    def _on(self, body: dict[str, Any], message: Any) -> None:
        self.bodies.append(body)
        message.ack()

    def drain_until(self, predicate, timeout: float = 30) -> None:  # type: ignore[no-untyped-def]
        def done() -> bool:
            with contextlib.suppress(TimeoutError):
                self.conn.drain_events(timeout=0.2)
            return predicate(self.bodies)

        wait_for(done, timeout, "status messages", interval=0)

    def close(self) -> None:
        self.consumer.cancel()
        self.conn.release()
