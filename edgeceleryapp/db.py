"""Engine and sessions. SQLite runs in WAL mode with immediate write transactions so that
worker processes queue for the write lock instead of failing; PostgreSQL needs nothing special.

Reads that write nothing use ``read_scope``: on SQLite they begin DEFERRED, so in WAL mode they
never wait for (or hold) the one write lock that every worker process shares. Taking that lock
for every lookup made readers queue behind writers under load (bench/throughput.py).
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Connection, Engine, create_engine, event, inspect, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from edgeceleryapp.models import Base
from edgeceleryapp.settings import get_settings


@dataclass(frozen=True)
class _Binding:
    """The process's engine and its session factories, made and replaced as one: a reader
    takes all three from the one object it read, never one from before a reset and one from
    after."""

    engine: Engine
    sessions: sessionmaker[Session]
    reads: sessionmaker[Session]
    pid: int


_binding: _Binding | None = None
# Making and dropping the binding are one step each: a thread that read the settings, then
# stored its engine after another had reset it (new settings: a test's own database), left
# the process on the old database.
_binding_lock = threading.Lock()


def _new_lock_in_child() -> None:
    """A fork copies the lock as it was: held, if another thread held it then."""
    global _binding_lock
    _binding_lock = threading.Lock()


os.register_at_fork(after_in_child=_new_lock_in_child)
# An execution option that marks a connection's transaction as read-only (see ``_on_begin``).
READ_ONLY = "edgecelery_read_only"


def _sqlite_setup(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record):  # type: ignore[no-untyped-def]
        dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute(f"PRAGMA busy_timeout={int(WRITE_LOCK_WAIT * 1000)}")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn):  # type: ignore[no-untyped-def]
        if conn.get_execution_options().get(READ_ONLY, False):
            conn.exec_driver_sql("BEGIN")
        else:
            begin_immediate(conn.connection.dbapi_connection)


# Seconds a write transaction waits for SQLite's one write lock before it fails.
WRITE_LOCK_WAIT = 60.0
# The longest pause between two tries for the write lock.
LONGEST_PAUSE = 0.002


def begin_immediate(dbapi_conn: sqlite3.Connection) -> None:
    """Take the write lock, trying again after pauses of at most ``LONGEST_PAUSE``.

    SQLite's own busy handler sleeps 1, 2, 5, 10, 15, 20, 25, ... ms between tries, so a
    transaction that finds the lock held for a millisecond often waits 8 to 30: with the
    worker processes of a busy site taking turns, that was a fifth of a step's time in
    bench/deep_queue.py. Only the BEGIN waits here; statements inside the transaction keep
    SQLite's handler (they never wait for the write lock once it is held)."""
    dbapi_conn.execute("PRAGMA busy_timeout=0")
    try:
        deadline = time.monotonic() + WRITE_LOCK_WAIT
        pause = LONGEST_PAUSE / 16
        while True:
            try:
                dbapi_conn.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as exc:
                if exc.sqlite_errorcode != sqlite3.SQLITE_BUSY or time.monotonic() > deadline:
                    raise
            time.sleep(pause)
            pause = min(pause * 2, LONGEST_PAUSE)
    finally:
        dbapi_conn.execute(f"PRAGMA busy_timeout={int(WRITE_LOCK_WAIT * 1000)}")


def make_engine(url: str) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 60})
        _sqlite_setup(engine)
        return engine
    return create_engine(url, pool_pre_ping=True)


def _bound() -> _Binding:
    """This process's binding; a forked worker child makes its own, never uses its parent's."""
    global _binding
    current = _binding
    if current is not None and current.pid == os.getpid():
        return current
    with _binding_lock:
        if _binding is None or _binding.pid != os.getpid():
            made = make_engine(get_settings().database_url)
            _binding = _Binding(
                made,
                sessionmaker(made, expire_on_commit=False),
                sessionmaker(made.execution_options(**{READ_ONLY: True}), expire_on_commit=False),
                os.getpid(),
            )
        return _binding


def engine() -> Engine:
    """This process's engine."""
    return _bound().engine


def reset_engine() -> None:
    global _binding
    with _binding_lock:
        if _binding is not None and _binding.pid == os.getpid():
            _binding.engine.dispose()
        _binding = None


@contextmanager
def session_scope() -> Iterator[Session]:
    """One transaction: commit on success, roll back on any error."""
    with _bound().sessions() as session, session.begin():
        yield session


@contextmanager
def read_scope() -> Iterator[Session]:
    """One transaction that only reads: it takes no write lock on SQLite. Writing in it is a
    mistake (SQLite would refuse the upgrade at once instead of waiting for the lock)."""
    with _bound().reads() as session, session.begin():
        yield session


@contextmanager
def read_connection() -> Iterator[Connection]:
    """``read_scope`` as a plain connection, for compiled Core reads on the hot path: no ORM
    session to build and close around a query or two."""
    bind = engine().execution_options(**{READ_ONLY: True})
    with bind.connect() as conn, conn.begin():
        yield conn


def init_db() -> None:
    """Create missing tables, and the missing columns and indexes of tables that already exist
    (create_all makes those only with the table), so an older database gains what a newer
    version added. Added columns are nullable: rows already there need no value."""
    bind = engine()
    Base.metadata.create_all(bind)
    with bind.begin() as conn:
        existing = inspect(conn)
        for table in Base.metadata.sorted_tables:
            have = {c["name"] for c in existing.get_columns(table.name)}
            for column in table.columns:
                if column.name not in have and column.nullable:
                    kind = column.type.compile(dialect=bind.dialect)
                    # Names from our own models, never from input.
                    add = f'ALTER TABLE {table.name} ADD COLUMN "{column.name}" {kind}'
                    conn.execute(text(add))
    for table in Base.metadata.sorted_tables:
        for index in table.indexes:
            index.create(bind, checkfirst=True)
