"""Fixtures. Unit tests use SQLite in a temporary directory and kombu's in-memory transport;
``any_db_env`` runs a test on SQLite and again on a private PostgreSQL server (tests/pg.py,
started once per session, its database emptied for each test); integration tests
(tests/integration) start a private Redis and real worker processes.

The test process's Celery app always talks to memory://: integration tests drive the
service through the ``edgecelery`` command in subprocesses, which read their own settings.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

os.environ["EDGECELERY_BROKER_URL"] = "memory://"
os.environ.pop("EDGECELERY_CONFIG", None)

from edgeceleryapp.db import init_db, reset_engine
from edgeceleryapp.devstack import write_config
from edgeceleryapp.settings import reset_settings
from edgeceleryapp.status_outbox import write_pending_marks
from tests.pg import PostgresServer, PostgresUnavailable, empty_database

SITES = ("alpha", "beta")


@dataclass
class Env:
    """A configured one-machine deployment in a temporary directory."""

    root: Path
    config: Path
    backend: str = "sqlite"  # the database behind it: "sqlite" or "postgresql"

    @property
    def data(self) -> Path:
        return self.root / "data"

    def site_workdir(self, site: str) -> Path:
        return self.root / "sites" / site


def _env(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, database_url: str | None = None
) -> Iterator[Env]:
    config = write_config(
        tmp_path,
        "memory://",
        SITES,
        poll_interval=0.2,
        status_interval=0.2,
        extra="[retry]\nmax_retries = 2\nbackoff_base = 0.05\nbackoff_max = 0.2",
        database_url=database_url,
    )
    (tmp_path / "data").mkdir()
    monkeypatch.setenv("EDGECELERY_CONFIG", str(config))
    reset_settings()
    reset_engine()
    init_db()
    yield Env(tmp_path, config, "postgresql" if database_url else "sqlite")
    write_pending_marks()  # into this test's database, not the next one's
    reset_engine()
    reset_settings()


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Env]:
    yield from _env(tmp_path, monkeypatch)


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A private PostgreSQL server for the session (tests/pg.py), as the SQLAlchemy URL of its
    database: ``postgresql+psycopg://postgres@127.0.0.1:PORT/edgecelery``. Missing binaries
    fail, never skip: CI installs them through scripts/setup.sh."""
    server, missing = PostgresServer(), ""
    try:
        server.start()
    except PostgresUnavailable as exc:
        missing = str(exc)
    if missing:
        pytest.fail(missing, pytrace=False)
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def any_db_env(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Env]:
    """``env`` on each database: the same settings, with the PostgreSQL database emptied before
    each test for the second (init_db creates the tables again). The server starts only when a
    PostgreSQL case runs."""
    url = None
    if request.param == "postgresql":
        url = request.getfixturevalue("postgres_url")
        empty_database(url)
    yield from _env(tmp_path, monkeypatch, url)
