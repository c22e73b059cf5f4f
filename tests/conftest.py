"""Fixtures. Unit tests use SQLite in a temporary directory and kombu's in-memory transport;
integration tests (tests/integration) start a private Redis and real worker processes.

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

from edgeceleryapp.cli.demo import write_config
from edgeceleryapp.db import init_db, reset_engine
from edgeceleryapp.settings import reset_settings

SITES = ("alpha", "beta")


@dataclass
class Env:
    """A configured one-machine deployment in a temporary directory."""

    root: Path
    config: Path

    @property
    def data(self) -> Path:
        return self.root / "data"

    def site_workdir(self, site: str) -> Path:
        return self.root / "sites" / site


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Env]:
    config = write_config(
        tmp_path,
        "memory://",
        SITES,
        poll_interval=0.2,
        status_interval=0.2,
        extra="[retry]\nmax_retries = 2\nbackoff_base = 0.05\nbackoff_max = 0.2",
    )
    (tmp_path / "data").mkdir()
    monkeypatch.setenv("EDGECELERY_CONFIG", str(config))
    reset_settings()
    reset_engine()
    init_db()
    yield Env(tmp_path, config)
    reset_engine()
    reset_settings()
