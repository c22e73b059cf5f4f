"""A one-machine service: a private Redis on a free loopback port, a settings file, a database
and worker processes, all stopped again on the way out (``DevStack.running``).

Used by ``edgecelery demo``, the integration tests and the benchmarks, so all of them run the
real thing, assembled one way: the real broker, real ``edgecelery worker`` processes, the real
poll schedule.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, Self

import redis

from edgeceleryapp.errors import ConfigurationError
from edgeceleryapp.rabbitmq_server import RabbitMQServer
from edgeceleryapp.throwaway_ca import BrokerTLS


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
    """redis-server from the system (Debian's redis-server), bound to 127.0.0.1 only.

    It persists as a deployed broker should: every write goes to an append-only file that is
    fsynced each second (AOF ``everysec``), so a restart on the same directory, even after a
    crash, still holds the queued messages (all but the last second's at worst). The directory
    holds only Redis's files and its log, so ``start(empty=True)`` can forget them all."""

    directory: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen | None = None
    # TLS only (``--port 0``), clients must show a certificate from the same CA.
    tls: BrokerTLS | None = None

    @property
    def url(self) -> str:
        scheme = "rediss" if self.tls else "redis"
        return f"{scheme}://127.0.0.1:{self.port}/0"

    def client(self, timeout: float = 0.2) -> redis.Redis:
        """A redis-py client to this server (with the client certificate under TLS)."""
        if self.tls is None:
            return redis.Redis(host="127.0.0.1", port=self.port, socket_connect_timeout=timeout)
        return redis.Redis(
            host="127.0.0.1",
            port=self.port,
            socket_connect_timeout=timeout,
            ssl=True,
            ssl_ca_certs=str(self.tls.ca.ca_file),
            ssl_certfile=str(self.tls.client.cert_file),
            ssl_keyfile=str(self.tls.client.key_file),
        )

    @property
    def log(self) -> Path:
        return self.directory / "redis.log"

    def start(self, *, empty: bool = False) -> RedisServer:
        """Start (or start again, on the same port and directory) and wait for a ping.
        ``empty``: delete what an earlier run left (the AOF, any snapshot) first, a restart that
        loses every message, as a broker without persistence would."""
        binary = shutil.which("redis-server")
        if binary is None:
            raise ConfigurationError(
                "redis-server: not installed (Debian: apt-get install redis-server)"
            )
        self.directory.mkdir(parents=True, exist_ok=True)
        if empty:
            for path in self.directory.iterdir():
                if path == self.log:
                    continue
                if path.is_dir():
                    shutil.rmtree(path)
                else:
                    path.unlink()
        listen = ["--port", str(self.port)]
        if self.tls is not None:
            listen = [
                "--port",
                "0",
                "--tls-port",
                str(self.port),
                "--tls-cert-file",
                str(self.tls.server.cert_file),
                "--tls-key-file",
                str(self.tls.server.key_file),
                "--tls-ca-cert-file",
                str(self.tls.ca.ca_file),
                "--tls-auth-clients",
                "yes",
            ]
        self.process = subprocess.Popen(
            [
                binary,
                *listen,
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "everysec",
                "--dir",
                str(self.directory),
                "--protected-mode",
                "yes",
            ],
            stdout=self.log.open("a"),
            stderr=subprocess.STDOUT,
        )
        client = self.client()

        def ping() -> bool:
            if self.process and self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited; see {self.log}")
            try:
                return bool(client.ping())
            except redis.ConnectionError:  # BusyLoadingError too: still reading the AOF
                return False

        wait_for(ping, 10, "redis-server to answer")
        return self

    def kill(self) -> None:
        """SIGKILL: a crash, with no chance to write anything more to disk."""
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

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
    # Start plain ``celery -A <app> worker -Q <queue>`` instead of our wrapper: the service's
    # app started as Celery documents it, or a benchmark's app (bench/*_app.py).
    app: str | None = None
    queue: str | None = None  # with ``app``; ``site.<name>`` unless given
    loglevel: str = "INFO"
    options: tuple[str, ...] = ()  # more command-line options, e.g. ``--intake``
    process: subprocess.Popen | None = None

    @property
    def pid(self) -> int:
        assert self.process is not None, f"worker {self.name} was not started"
        return self.process.pid

    def start(self) -> Worker:
        argv = [
            sys.executable,
            "-m",
            "edgeceleryapp.cli",
            "worker",
            "-c",
            str(self.concurrency),
            "--loglevel",
            self.loglevel,
        ]
        if self.app is not None:
            argv = [
                sys.executable,
                "-m",
                "celery",
                "-A",
                self.app,
                "worker",
                "-c",
                str(self.concurrency),
                "-Q",
                self.queue or f"site.{self.name}",
                "-n",
                f"{self.name}@%h",
                "--without-gossip",
                "--without-mingle",
                "--loglevel",
                self.loglevel,
            ]
        elif self.name == "argo":
            argv += ["--argo", "--beat-schedule", str(self.log.with_suffix(".beat"))]
        else:
            argv += ["--site", self.name]
        argv += self.options
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

    from edgeceleryapp.broker_connection import for_url, login_method, ssl_options

    wanted = {f"{n}@{socket.gethostname()}" for n in names}
    settings = for_url(broker_url)
    probe = Celery("edgecelery-probe", broker=broker_url)
    probe.conf.broker_use_ssl = ssl_options(settings)
    probe.conf.broker_login_method = login_method(settings)

    def answered() -> bool:
        replies = probe.control.ping(timeout=0.5) or []
        return wanted <= {name for reply in replies for name in reply}

    try:
        wait_for(answered, timeout, f"workers {sorted(wanted)}", interval=0.2)
    finally:
        probe.close()


def _toml_table(name: str, values: dict[str, Any]) -> list[str]:
    """A TOML table of scalars and lists (JSON's forms are TOML's), subtables after."""
    lines = [f"[{name}]"]
    lines += [f"{k} = {json.dumps(v)}" for k, v in values.items() if not isinstance(v, dict)]
    for key, sub in values.items():
        if isinstance(sub, dict):
            lines += _toml_table(f"{name}.{key}", sub)
    return lines


def sources_toml(sources: list[dict[str, Any]]) -> str:
    """``[[sources]]`` tables of scalars (settings' job sources), for ``write_config``'s
    ``extra``."""
    lines = []
    for source in sources:
        lines += ["[[sources]]", *(f"{k} = {json.dumps(v)}" for k, v in source.items())]
    return "\n".join(lines)


def write_config(
    root: Path,
    broker_url: str,
    sites: Iterable[str],
    *,
    poll_interval: float = 0.5,
    status_interval: float = 2.0,
    extra: str = "",
    database_url: str | None = None,
    site_settings: dict[str, dict[str, Any]] | None = None,
    argo_settings: dict[str, Any] | None = None,
    broker_settings: dict[str, Any] | None = None,
) -> Path:
    """A settings file for a one-machine service rooted at ``root`` (SQLite in ``root`` unless
    ``database_url`` names another database). ``site_settings`` adds to or overrides a site's
    table (nested dicts become subtables, e.g. ``{"ssh": {...}}``); ``argo_settings`` the same
    for the Argo service's table, ``broker_settings`` the ``[broker]`` table (TLS files,
    login); ``extra`` is TOML put before the tables."""
    database_url = database_url or "sqlite:///" + str(root / "edgecelery.db")
    lines = [
        f"broker_url = {json.dumps(broker_url)}",
        f"database_url = {json.dumps(database_url)}",
        extra,
        *_toml_table(
            "argo",
            {
                "staging_dir": str(root / "argo"),
                "transfer_roots": [str(root / "data")],
                **(argo_settings or {}),
            },
        ),
    ]
    if broker_settings:
        lines += _toml_table("broker", broker_settings)
    for site in sites:
        values: dict[str, Any] = {
            "scheduler": "local",
            "workdir": str(root / "sites" / site),
            "transfer_roots": [str(root / "data")],
            "poll_interval": poll_interval,
            "status_interval": status_interval,
            **(site_settings or {}).get(site, {}),
        }
        lines += _toml_table(f"sites.{site}", values)
    path = root / "edgecelery.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


@contextmanager
def _sigterm_unwinds() -> Iterator[Callable[[], None]]:
    """SIGTERM raises SystemExit, so a stack stopped by ``kill`` stops its processes too: they
    run in sessions of their own and would outlive it. Yields what to call once the stopping
    begins: from then on SIGTERM is ignored, so that a signal cannot cut the stopping short.
    Only the main thread can set a handler; elsewhere the default stands."""
    if threading.current_thread() is not threading.main_thread():
        yield lambda: None
        return

    def ignore() -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)

    def unwind(signum: int, _frame: FrameType | None) -> None:
        ignore()
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, unwind)
    try:
        yield ignore
    finally:
        signal.signal(signal.SIGTERM, previous)


@dataclass
class DevStack:
    """A running one-machine service: its folder, settings file, broker, workers and the
    other commands started with it (job browser, Flower).

    Workers run with ``env``: this process's environment without its ``EDGECELERY_*``
    settings (unless asked to keep them), so that only the settings file speaks."""

    root: Path
    sites: tuple[str, ...]
    config: Path
    env: dict[str, str]
    redis: RedisServer | None
    workers: dict[str, Worker] = field(default_factory=dict)
    services: list[subprocess.Popen] = field(default_factory=list)
    # The stack's broker when it is RabbitMQ (a virtual host of its own on a shared node).
    rabbitmq: RabbitMQServer | None = None
    rabbitmq_url: str = ""

    @property
    def broker_url(self) -> str:
        if self.rabbitmq is not None:
            return self.rabbitmq_url
        assert self.redis is not None
        return self.redis.url

    @property
    def tls(self) -> BrokerTLS | None:
        """The broker's CA and certificates, when it speaks TLS."""
        if self.rabbitmq is not None:
            return self.rabbitmq.tls
        return self.redis.tls if self.redis is not None else None

    @property
    def data(self) -> Path:
        return self.root / "data"

    def start_worker(
        self,
        name: str,
        *,
        wait: bool = True,
        env_extra: dict[str, str] | None = None,
        **options: Any,
    ) -> Worker:
        """A worker named ``name`` (``argo`` or a site), with ``Worker``'s options and
        ``env_extra`` on top of the stack's environment (a site's own broker certificate:
        ``EDGECELERY_BROKER__CERT_FILE``); by default returns once it answers a ping."""
        log = self.root / "logs" / f"{name}.log"
        worker = Worker(name, {**self.env, **(env_extra or {})}, log, **options).start()
        self.workers[name] = worker
        if wait:
            self.wait_for_workers([name])
        return worker

    def start_workers(self, names: Iterable[str], **options: Any) -> list[Worker]:
        """Several workers with the same options, started together, then awaited together."""
        names = list(names)
        started = [self.start_worker(name, wait=False, **options) for name in names]
        self.wait_for_workers(names)
        return started

    def wait_for_workers(self, names: list[str], timeout: float = 60) -> None:
        wait_for_workers(self.broker_url, names, timeout)

    def start_service(self, argv: list[str], log: Path) -> subprocess.Popen:
        """Another ``edgecelery`` command (the job browser, Flower) in its own session,
        stopped with the stack."""
        log.parent.mkdir(parents=True, exist_ok=True)
        process = subprocess.Popen(
            [sys.executable, "-m", "edgeceleryapp.cli", *argv],
            env=self.env,
            stdout=log.open("w"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.services.append(process)
        return process

    def stop_services(self) -> None:
        for process in self.services:
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(20)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(10)
        self.services.clear()

    def stop_workers(self) -> None:
        for worker in self.workers.values():
            worker.stop()
        self.workers.clear()

    @classmethod
    @contextmanager
    def running(
        cls,
        root: Path,
        sites: Iterable[str],
        *,
        workers: Iterable[str] | None = None,
        concurrency: int = 1,
        redis: RedisServer | None = None,
        tls: bool = False,
        rabbitmq: RabbitMQServer | None = None,
        env_extra: dict[str, str] | None = None,
        keep_settings_env: bool = False,
        **settings: Any,
    ) -> Iterator[Self]:
        """Redis (a private one unless ``redis`` is given: that one is left running; ``tls``:
        a private one that speaks only TLS, with a throw-away CA and client certificates;
        ``rabbitmq``: a virtual host of its own on that running node instead), a
        settings file (``settings`` go to ``write_config``), a fresh database and the
        ``workers`` (default: ``argo`` and one per site); all stopped on the way out, by an
        exception or SIGTERM too.

        This process uses the settings file while the stack runs (``EDGECELERY_CONFIG``), so
        it can submit jobs and read the database the workers write."""
        from edgeceleryapp.db import init_db, reset_engine
        from edgeceleryapp.settings import reset_settings

        sites = tuple(sites)
        saved = os.environ.get("EDGECELERY_CONFIG")
        with _sigterm_unwinds() as stopping:
            own_redis = redis is None and rabbitmq is None
            if own_redis:
                broker_tls = BrokerTLS.make(root / "tls") if tls else None
                redis = RedisServer(root / "redis", tls=broker_tls).start()
            server = redis
            stack: Self | None = None
            try:
                broker: dict[str, Any] = {}
                if rabbitmq is not None:
                    url = rabbitmq.add_vhost(root.name)
                    broker = {
                        **rabbitmq.tls.settings(),
                        "login": "certificate",
                        "management_url": rabbitmq.management_url,
                    }
                else:
                    assert server is not None
                    url = server.url
                    broker = server.tls.settings() if server.tls else {}
                if broker:
                    settings["broker_settings"] = {
                        **broker,
                        **settings.get("broker_settings", {}),
                    }
                config = write_config(root, url, sites, **settings)
                (root / "data").mkdir(exist_ok=True)
                env = {
                    k: v
                    for k, v in os.environ.items()
                    if keep_settings_env or not k.startswith("EDGECELERY_")
                }
                env.update(env_extra or {})
                env["EDGECELERY_CONFIG"] = str(config)
                os.environ["EDGECELERY_CONFIG"] = str(config)
                reset_settings()
                reset_engine()
                init_db()
                stack = cls(root, sites, config, env, server, rabbitmq=rabbitmq, rabbitmq_url=url)
                names = ("argo", *sites) if workers is None else tuple(workers)
                if names:
                    stack.start_workers(names, concurrency=concurrency)
                yield stack
            finally:
                stopping()
                if stack is not None:
                    stack.stop_services()
                    stack.stop_workers()
                if own_redis and server is not None:
                    server.stop()
                reset_engine()
                if saved is None:
                    os.environ.pop("EDGECELERY_CONFIG", None)
                else:
                    os.environ["EDGECELERY_CONFIG"] = saved
                reset_settings()
