"""A private PostgreSQL server for the test session, from Debian's ``postgresql`` package.

initdb into a fresh temporary directory, listening on 127.0.0.1 only (a free port) with its
unix socket in that directory, trust authentication, started and stopped with pg_ctl. PostgreSQL
refuses to run as root, so as root the server runs as the package's ``postgres`` user.

Only the tests use it (the service itself is given a PostgreSQL URL, never starts one), so it
lives here rather than in ``edgeceleryapp.devstack``.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.pool import NullPool

from edgeceleryapp.devstack import free_port

USER = "postgres"  # the database superuser initdb creates (and, as root, the OS user)


class PostgresUnavailable(RuntimeError):
    """The PostgreSQL binaries or the unprivileged user to run them are missing."""


def bin_dir() -> Path:
    """Debian keeps initdb and pg_ctl in /usr/lib/postgresql/<version>/bin; the newest wins."""
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"),
        key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0,
    )
    if found:
        return Path(found[-1]).parent
    on_path = shutil.which("pg_ctl")
    if on_path and shutil.which("initdb"):
        return Path(on_path).parent
    raise PostgresUnavailable(
        "PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/pg_ctl): run "
        "scripts/setup.sh as root, or apt-get install postgresql"
    )


@dataclass
class PostgresServer:
    """One throw-away cluster; ``url`` is the SQLAlchemy URL of its ``edgecelery`` database."""

    port: int = field(default_factory=free_port)
    directory: Path | None = None
    database: str = "edgecelery"

    @property
    def data(self) -> Path:
        assert self.directory is not None
        return self.directory / "data"

    @property
    def log(self) -> Path:
        assert self.directory is not None
        return self.directory / "server.log"

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://{USER}@127.0.0.1:{self.port}/{self.database}"

    def _run(self, *argv: str) -> None:
        prefix: list[str] = []
        if os.geteuid() == 0:
            prefix = ["runuser", "-u", USER, "--"]
        done = subprocess.run(
            [*prefix, *argv],
            cwd=self.directory,  # the server user may not be able to enter ours
            env={**os.environ, "LC_ALL": "C"},
            capture_output=True,
            text=True,
            timeout=120,
        )
        if done.returncode != 0:
            log = self.log.read_text() if self.log.exists() else ""
            raise RuntimeError(
                f"{' '.join(argv[:2])} failed ({done.returncode}): {done.stderr or done.stdout}"
                + (f"\nserver log:\n{log[-2000:]}" if log else "")
            )

    def start(self) -> PostgresServer:
        binaries = bin_dir()
        self.directory = Path(tempfile.mkdtemp(prefix="edgecelery-pg-"))
        try:
            self._start(binaries)
        except BaseException:
            with contextlib.suppress(Exception):
                self.stop()
            raise
        return self

    def _start(self, binaries: Path) -> None:
        assert self.directory is not None
        if os.geteuid() == 0:
            try:
                owner = pwd.getpwnam(USER)
            except KeyError:
                raise PostgresUnavailable(
                    f"PostgreSQL will not run as root and there is no {USER!r} user to run it "
                    "(Debian's postgresql package creates one: run scripts/setup.sh as root)"
                ) from None
            os.chown(self.directory, owner.pw_uid, owner.pw_gid)
        self._run(
            str(binaries / "initdb"),
            "-D",
            str(self.data),
            "-U",
            USER,
            "--auth=trust",
            "--encoding=UTF8",
            "--no-locale",
            "--no-sync",
        )
        options = " ".join(
            [
                "-c listen_addresses=127.0.0.1",
                f"-c port={self.port}",
                f"-c unix_socket_directories={self.directory}",
                # A throw-away cluster: durability buys nothing and costs seconds.
                "-c fsync=off",
                "-c synchronous_commit=off",
                "-c full_page_writes=off",
            ]
        )
        self._run(
            str(binaries / "pg_ctl"),
            "start",
            "-w",
            "-t",
            "60",
            "-D",
            str(self.data),
            "-l",
            str(self.log),
            "-o",
            options,
        )
        self.create_database(self.database)

    def create_database(self, name: str) -> str:
        """CREATE DATABASE ``name``; returns its SQLAlchemy URL."""
        url = make_url(self.url).set(database=name).render_as_string(hide_password=False)
        _execute(make_url(self.url).set(database="postgres"), f'CREATE DATABASE "{name}"')
        return url

    def stop(self) -> None:
        if self.directory is None:
            return
        try:
            if (self.data / "postmaster.pid").exists():
                self._run(
                    str(bin_dir() / "pg_ctl"), "stop", "-w", "-m", "fast", "-D", str(self.data)
                )
        finally:
            shutil.rmtree(self.directory, ignore_errors=True)
            self.directory = None


def empty_database(url: str) -> None:
    """Drop every table, index and sequence of the database at ``url``, as if just created (a
    tenth of the time of CREATE DATABASE). A connection a test left open with a lock fails this
    within seconds instead of hanging the session."""
    _execute(
        url,
        "SET lock_timeout = '10s'",
        "DROP SCHEMA public CASCADE",
        "CREATE SCHEMA public",
    )


def _execute(url: str | URL, *statements: str) -> None:
    engine = create_engine(url, poolclass=NullPool, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            for statement in statements:
                conn.execute(text(statement))
    finally:
        engine.dispose()
