"""SQLite's write lock: a write transaction waits for it in short pauses (``db.begin_immediate``)
and gives up with SQLite's own error after ``WRITE_LOCK_WAIT``."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from edgeceleryapp import db


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    return conn


def test_a_writer_waits_for_the_lock_and_takes_it_when_released(tmp_path: Path) -> None:
    holder, waiter = _connect(tmp_path / "db"), _connect(tmp_path / "db")
    holder.execute("BEGIN IMMEDIATE")
    began = threading.Event()

    def write() -> None:
        db.begin_immediate(waiter)
        began.set()
        waiter.execute("CREATE TABLE t (x)")
        waiter.execute("COMMIT")

    thread = threading.Thread(target=write)
    thread.start()
    assert not began.wait(0.2), "took the lock while another connection held it"
    holder.execute("COMMIT")
    thread.join(10)
    assert began.is_set()
    assert holder.execute("SELECT count(*) FROM t").fetchone() == (0,)
    timeout = waiter.execute("PRAGMA busy_timeout").fetchone()[0]
    assert timeout == int(db.WRITE_LOCK_WAIT * 1000)


def test_a_writer_gives_up_after_the_wait(tmp_path: Path, monkeypatch) -> None:
    holder, waiter = _connect(tmp_path / "db"), _connect(tmp_path / "db")
    holder.execute("BEGIN IMMEDIATE")
    monkeypatch.setattr(db, "WRITE_LOCK_WAIT", 0.05)
    with pytest.raises(sqlite3.OperationalError) as failed:
        db.begin_immediate(waiter)
    assert failed.value.sqlite_errorcode == sqlite3.SQLITE_BUSY
    assert not waiter.in_transaction
    assert waiter.execute("PRAGMA busy_timeout").fetchone()[0] == 50
