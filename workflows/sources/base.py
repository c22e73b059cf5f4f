"""What every job source does with what it found: each item goes through the intake path
(``workflows.intake.submit_argo_batch``: validation, known sites and URLs, all-or-nothing
storage) under a key of its own, and a refused one is set aside as a dead letter for
operators, named after its source.

Exactly once rests on the key: it is stored as the job's intake key, in the same row and
transaction as the job (unique), so an item read again after a crash, or by a second argo
worker, finds the job its first reading made instead of making another. A refused item's key
is the dead letter's ``message_id``: read again, it is not set aside twice.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select

from edgeceleryapp import dead_letters
from edgeceleryapp.db import read_scope
from edgeceleryapp.errors import ValidationFailed
from edgeceleryapp.models import DeadLetter
from edgeceleryapp.settings import SourceSettings
from workflows.inbound import MESSAGE_ID_MAX, SOURCE_KEY_PREFIX, describe, is_transient
from workflows.intake import submit_argo_batch
from workflows.intake_consumer import rejection

log = logging.getLogger(__name__)


def source_key(source: str, item: str) -> str:
    """The intake key of a source's item: ``source:<name>:<item>``. Producers on the intake
    queue may not use message ids with this prefix (``workflows.inbound``), so no message
    can take a row's or a file's place."""
    return f"{SOURCE_KEY_PREFIX}{source}:{item}"


@dataclass
class Offer:
    """One item a source found: its key, the job message it makes (or why it makes none),
    and its body as found, kept with a refusal for the operator."""

    key: str
    data: Any
    body: bytes
    errors: list[tuple[str, str]] | None = None


@dataclass(frozen=True)
class Taken:
    """What became of an offer: the Argo job it made, or the problems that refused it."""

    key: str
    argo_id: int | None
    errors: list[tuple[str, str]] | None = None


def refused_offer(key: str, body: bytes, errors: list[tuple[str, str]]) -> Offer:
    return Offer(key, None, body, errors)


class JobSource:
    """A source of Argo job messages, polled by the argo worker (``workflows.sources.runner``).

    ``poll`` looks once and hands what it found to ``take``; it returns how many items it
    handled, so the runner looks again at once when a batch came back full. A transient
    error (our database or broker away) propagates: nothing is marked taken, the next look
    reads the same items again."""

    def __init__(self, settings: SourceSettings) -> None:
        self.settings = settings
        self.name = settings.name

    def start(self) -> None:
        """Prepare (create folders, connect); called once on the runner's thread."""

    def poll(self) -> int:
        raise NotImplementedError

    def close(self) -> None:
        """Release what ``start`` took."""

    def take(self, offers: list[Offer]) -> list[Taken]:
        """Submit the offers' messages through intake, set the refused ones aside; what
        became of each, in order."""
        valid = [o for o in offers if o.errors is None]
        outcomes: dict[str, int | ValidationFailed] = {}
        if valid:
            outcomes = dict(zip(
                [o.key for o in valid],
                _submit([(o.data, o.key) for o in valid]),
                strict=True,
            ))  # fmt: skip
        taken = []
        for offer in offers:
            outcome = outcomes.get(offer.key)
            if isinstance(outcome, ValidationFailed):
                offer.errors = outcome.errors
            if offer.errors is not None or outcome is None:
                taken.append(Taken(offer.key, None, offer.errors))
                continue
            taken.append(Taken(offer.key, outcome))
            log.info("source %s: %s is argo job %d", self.name, offer.key, outcome)
        self._set_aside([o for o in offers if o.errors is not None])
        return taken

    def _set_aside(self, refused: list[Offer]) -> None:
        if not refused:
            return
        with read_scope() as s:
            already = set(
                s.scalars(
                    select(DeadLetter.message_id).where(
                        DeadLetter.source == self.name,
                        DeadLetter.message_id.in_([o.key for o in refused]),
                    )
                )
            )
        dead_letters.set_aside(
            [
                dead_letters.Letter(
                    self.name,
                    o.body,
                    "application/json",
                    o.key,
                    o.errors or [],
                    rejection(o.data, o.errors or [], o.key),
                )
                for o in refused
                if o.key not in already
            ]
        )


def _submit(items: list[tuple[Any, str]]) -> list[int | ValidationFailed]:
    """``submit_argo_batch``; if the batch fails for a reason other than a passing outage,
    one item at a time, so that only the item that fails is refused ("could not be
    stored"), as the intake consumer does."""
    try:
        return submit_argo_batch(items)
    except Exception as exc:
        if is_transient(exc) or len(items) == 1:
            if is_transient(exc):
                raise
            log.exception("job source: %s could not be stored", items[0][1])
            return [ValidationFailed([("message", f"could not be stored: {describe(exc)}")])]
        return [outcome for item in items for outcome in _submit([item])]


def body_of(value: Any) -> bytes:
    """What a refused item's dead letter keeps: its JSON."""
    return json.dumps(value, default=str).encode()


def key_fits(key: str) -> str | None:
    """Why a key cannot be an intake key (too long), or None."""
    if len(key) > MESSAGE_ID_MAX:
        return f"its key makes an id of {len(key)} characters (at most {MESSAGE_ID_MAX})"
    return None
