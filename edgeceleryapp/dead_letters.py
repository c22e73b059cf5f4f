"""Dead letters: messages from outside that the service refused, kept for an operator.

A refused message is acknowledged, so it never blocks its queue or kills its consumer, and is
kept here instead of being dropped: the operator lists, inspects, removes or re-submits it
(``edgecelery intake dead-letters``). The database holds them rather than a broker queue
because the database drives (docs/architecture.md): a broker-side dead-letter queue would
differ between Redis and RabbitMQ and could not be listed or inspected the same way.

An intake letter carries its ``REJECTED`` answer, stored in the same row and published after
the commit, like a status message from the outbox: an answer whose publish failed is sent
again by the status sweep (``resend_answers``), so a producer always hears why.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, delete, false, select, update

from edgeceleryapp.db import read_scope, session_scope
from edgeceleryapp.errors import NotFound
from edgeceleryapp.models import DeadLetter, utcnow
from edgeceleryapp.settings import get_settings
from edgeceleryapp.status_outbox import publish

log = logging.getLogger(__name__)

# Answers re-sent per broker batch by the sweep.
RESEND_CHUNK = 500

_MARK_SENT = (
    update(DeadLetter.__table__)
    .where(DeadLetter.__table__.c.id.in_(bindparam("ids", expanding=True)))
    .values(answer_sent=True)
)


@dataclass
class Letter:
    """A refused message as it arrived, with every problem found in it."""

    source: str  # the consumer that refused it: "intake" or "mail"
    body: bytes
    content_type: str
    message_id: str | None  # only a usable id; a bad one is named in ``errors``
    errors: list[tuple[str, str]]
    # The REJECTED status message that answers it (routing key, body), intake only.
    answer: tuple[str, dict[str, Any]] | None = None
    received_at: datetime = field(default_factory=utcnow)


def set_aside(letters: list[Letter]) -> list[int]:
    """Store the letters in one transaction, then publish their answers; the letters' ids.
    Each answer names its letter (``dead_letter_id``) so a producer can point an operator at
    it."""
    if not letters:
        return []
    keep = get_settings().message_max_bytes
    with session_scope() as s:
        rows = [
            DeadLetter(
                source=letter.source,
                received_at=letter.received_at,
                # Never the reason a letter cannot be stored: a longer id is left out.
                message_id=letter.message_id if len(letter.message_id or "") <= 256 else None,
                content_type=letter.content_type[:256],
                body=letter.body[:keep],
                body_size=len(letter.body),
                errors=[{"field": f, "problem": p} for f, p in letter.errors],
                answer_key=letter.answer[0] if letter.answer else None,
                answer_sent=letter.answer is None,
            )
            for letter in letters
        ]
        s.add_all(rows)
        s.flush()
        answers = []
        for row, letter in zip(rows, letters, strict=True):
            if letter.answer is not None:
                row.answer = {**letter.answer[1], "dead_letter_id": row.id}
                answers.append((row.id, letter.answer[0], row.answer))
        ids = [row.id for row in rows]
    for letter, letter_id in zip(letters, ids, strict=True):
        log.warning(
            "%s: message %s set aside as dead letter %d: %s",
            letter.source,
            letter.message_id,
            letter_id,
            reason(letter.errors),
        )
    _publish_answers(answers)
    return ids


def reason(errors: list[tuple[str, str]]) -> str:
    return "; ".join(f"{f}: {p}" for f, p in errors)


def _publish_answers(answers: list[tuple[int, str, dict[str, Any]]]) -> None:
    """Publish (letter id, routing key, answer) triples and mark them sent; a failed publish
    leaves them for ``resend_answers``."""
    if answers and publish([(key, body) for _, key, body in answers]):
        with session_scope() as s:
            s.execute(_MARK_SENT, {"ids": [letter_id for letter_id, _, _ in answers]})


def resend_answers(older_than: float = 0.0) -> int:
    """Publish again every answer that did not go out (older than ``older_than`` seconds, so
    one being published right now is spared); how many."""
    query = select(DeadLetter.id, DeadLetter.answer_key, DeadLetter.answer).where(
        DeadLetter.answer_sent == false()
    )
    if older_than:
        query = query.where(DeadLetter.received_at < utcnow() - timedelta(seconds=older_than))
    with read_scope() as s:
        rows = [(i, k, a) for i, k, a in s.execute(query.order_by(DeadLetter.id)) if k and a]
    for start in range(0, len(rows), RESEND_CHUNK):
        _publish_answers(rows[start : start + RESEND_CHUNK])
    return len(rows)


def _summary(row: DeadLetter) -> dict[str, Any]:
    return {
        "id": row.id,
        "source": row.source,
        "received_at": row.received_at,
        "message_id": row.message_id,
        "content_type": row.content_type,
        "body_size": row.body_size,
        "reason": "; ".join(f"{e['field']}: {e['problem']}" for e in row.errors),
        "answer_sent": row.answer_sent,
    }


def listing(source: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
    """The newest letters first (without their bodies)."""
    query = select(DeadLetter).order_by(DeadLetter.id.desc()).limit(limit)
    if source:
        query = query.where(DeadLetter.source == source)
    with read_scope() as s:
        return [_summary(row) for row in s.scalars(query)]


def get(letter_id: int) -> dict[str, Any]:
    """One letter with its body (as kept: ``body_kept`` bytes of ``body_size``), its errors
    and its answer."""
    with read_scope() as s:
        row = s.get(DeadLetter, letter_id)
        if row is None:
            raise NotFound(f"dead letter {letter_id} does not exist")
        return {
            **_summary(row),
            "errors": row.errors,
            "body": bytes(row.body),
            "body_kept": len(row.body),
            "answer_key": row.answer_key,
            "answer": row.answer,
        }


def remove(letter_ids: list[int]) -> None:
    """Delete the letters, all or none: an id that does not exist fails the whole call."""
    with session_scope() as s:
        found = set(s.scalars(select(DeadLetter.id).where(DeadLetter.id.in_(letter_ids))))
        missing = sorted(set(letter_ids) - found)
        if missing:
            raise NotFound(f"no dead letter {', '.join(map(str, missing))}")
        s.execute(delete(DeadLetter).where(DeadLetter.id.in_(letter_ids)))
