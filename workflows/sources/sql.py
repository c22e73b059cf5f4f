"""The ``sql`` job source: new rows of a database become Argo jobs (the HUST'17 paper's
DIII-D case, where an experiment database rather than a message queue says which shots to
analyse between shots).

Each look runs the configured query with ``:after`` (the last key taken) and ``:limit``; the
query and every value are the operator's and the row's as bound parameters, never SQL built
from data. A row becomes a message through the source's template (``template.py``) and enters
the intake path under the key ``source:<name>:<row key>``; the cursor moves on after the
jobs are stored. A crash in between reads the rows again and finds their jobs
(``base.JobSource.take``): one row, one job.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import Engine, create_engine, select, text
from sqlalchemy.dialects import postgresql, sqlite

from edgeceleryapp.db import read_scope, session_scope
from edgeceleryapp.errors import ConfigurationError, ValidationFailed
from edgeceleryapp.models import SourceCursor, utcnow
from edgeceleryapp.settings import SQLSourceSettings
from workflows.sources import template as templates
from workflows.sources.base import JobSource, Offer, body_of, key_fits, refused_offer, source_key


def row_key(row: Mapping[str, Any], column: str) -> int | str:
    """The row's key: an integer or text (what a cursor can be compared and stored as)."""
    if column not in row:
        raise ConfigurationError(
            f"sources: the query returns no column {column!r} (the source's key); "
            f"columns: {', '.join(row)}"
        )
    value = row[column]
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ConfigurationError(
            f"sources: key column {column!r} holds a {type(value).__name__}; it must hold "
            "integers or text"
        )
    return value


def offers_for(
    source: str, template: templates.Template, key_column: str, rows: Sequence[Mapping[str, Any]]
) -> list[Offer]:
    """Each row as an offer: its message, or why it makes none (the template's column
    missing, a value JSON cannot hold, a key too long to be an id)."""
    offers = []
    for row in rows:
        item = row_key(row, key_column)
        key = source_key(source, json.dumps(item))
        body = body_of(dict(row))
        if problem := key_fits(key):
            offers.append(refused_offer(key, body, [(key_column, problem)]))
            continue
        try:
            offers.append(Offer(key, templates.render(template, row), body))
        except ValidationFailed as exc:
            offers.append(refused_offer(key, body, exc.errors))
    return offers


def _upsert(dialect: str) -> Any:
    return (postgresql if dialect == "postgresql" else sqlite).insert(SourceCursor)


class SQLSource(JobSource):
    settings: SQLSourceSettings

    def __init__(self, settings: SQLSourceSettings) -> None:  # type: ignore[override]
        super().__init__(settings)
        self.template = templates.parse(settings.template)
        self.query = text(settings.query)
        self.engine: Engine | None = None
        self.after: int | str = settings.start_after

    def start(self) -> None:
        """Connect, and read where the last run stopped (kept in memory from then on: a
        second argo worker reading the same rows finds their jobs, so it needs no lock)."""
        self.engine = create_engine(self.settings.url, pool_pre_ping=True)
        self.after = self.cursor()

    def close(self) -> None:
        if self.engine is not None:
            self.engine.dispose()

    def cursor(self) -> int | str:
        with read_scope() as s:
            found = s.scalar(select(SourceCursor.last_key).where(SourceCursor.name == self.name))
        return self.settings.start_after if found is None else found

    def save_cursor(self, last: int | str) -> None:
        self.after = last
        with session_scope() as s:
            insert = _upsert(s.get_bind().dialect.name)
            values = {"name": self.name, "last_key": last, "updated_at": utcnow()}
            s.execute(
                insert.values(**values).on_conflict_do_update(
                    index_elements=["name"], set_={"last_key": last, "updated_at": utcnow()}
                )
            )

    def poll(self) -> int:
        assert self.engine is not None, "start() first"
        with self.engine.connect() as conn:
            params = {"after": self.after, "limit": self.settings.batch}
            rows = [dict(r) for r in conn.execute(self.query, params).mappings()]
        if not rows:
            return 0
        self.take(offers_for(self.name, self.template, self.settings.key, rows))
        self.save_cursor(max(row_key(row, self.settings.key) for row in rows))  # type: ignore[type-var]
        return len(rows)
