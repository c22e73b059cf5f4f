"""The intake queue (HUST'17 2.2.1, Argo's UserJobReceiver): production systems put Argo job
messages, plain JSON, on ``settings.intake_queue``; the argo worker consumes them.

A valid message becomes a running Argo job. Any other is acknowledged, set aside as a dead
letter for an operator (``edgecelery intake dead-letters``) and answered with a ``REJECTED``
status message naming every problem (on the message's own job_status_routing_key when it has a
usable one), so a bad message never blocks the queue, never stops the worker, and no job is
half-stored. Messages are screened (``workflows.inbound``) before any database work; a batch
that fails to store is split until the message that fails is found, so its neighbours are
stored. When the database or broker is away the batch goes back on the queue. The producer's
``message_id`` makes redelivery safe: one message, one job.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from celery import bootsteps
from kombu import Consumer, Exchange, Message, Queue

from edgeceleryapp import dead_letters
from edgeceleryapp.errors import InvalidState, ValidationFailed
from edgeceleryapp.models import utcnow
from edgeceleryapp.settings import get_settings
from workflows.inbound import (
    Received,
    Screened,
    bound_decompression,
    describe,
    is_transient,
    screen,
    set_aside,
    usable_id,
)
from workflows.intake import submit_argo_batch
from workflows.schemas import ROUTING_KEY_PATTERN

log = logging.getLogger(__name__)


def intake_queue() -> Queue:
    name = get_settings().intake_queue
    return Queue(name, Exchange(name, type="direct", durable=True), routing_key=name, durable=True)


def rejection(
    data: Any, errors: list[tuple[str, str]], message_id: str | None
) -> tuple[str, dict[str, Any]]:
    """The status message that tells a producer why its job message was refused."""
    key = data.get("job_status_routing_key") if isinstance(data, dict) else None
    if not isinstance(key, str) or not re.match(ROUTING_KEY_PATTERN, key):
        key = get_settings().default_status_routing_key
    user_id = data.get("user_id") if isinstance(data, dict) else None
    return key, {
        "kind": "intake",
        "argo_job_id": None,
        "message_id": message_id,
        "user_id": user_id if isinstance(user_id, str) and len(user_id) <= 256 else None,
        "from_state": "",
        "to_state": "REJECTED",
        "time": utcnow().isoformat() + "Z",
        "message": dead_letters.reason(errors),
        "errors": [{"field": f, "problem": p} for f, p in errors],
    }


def letter(
    received: Received, errors: list[tuple[str, str]], data: Any = None
) -> dead_letters.Letter:
    """A refused intake message as a dead letter, with its REJECTED answer."""
    message_id = usable_id(received.message_id)
    return dead_letters.Letter(
        "intake",
        received.body,
        received.content_type,
        message_id,
        errors,
        rejection(data, errors, message_id),
    )


def receive_batch(items: list[Screened]) -> list[int | None]:
    """Handle screened intake messages together; each job's id, or None for a refused
    message, which is set aside and answered."""
    outcomes = submit_argo_batch([(item.data, item.message_id) for item in items])
    refused = []
    for item, outcome in zip(items, outcomes, strict=True):
        if isinstance(outcome, ValidationFailed):
            refused.append(letter(item.received, outcome.errors, item.data))
        else:
            log.info("intake: message %s is argo job %s", item.message_id, outcome)
    dead_letters.set_aside(refused)
    return [None if isinstance(o, ValidationFailed) else o for o in outcomes]


def resubmit(letter_id: int, message_id: str | None = None) -> int:
    """Run a dead letter through intake again (after the settings or the sites changed, or
    with ``message_id`` replacing a bad one); the new job's id. The letter is removed once
    its job is stored; a message refused again stays, and the refusal is raised."""
    found = dead_letters.get(letter_id)
    if found["source"] != "intake":
        raise InvalidState(
            f"dead letter {letter_id} came from the {found['source']} queue: only intake "
            "messages can be re-submitted"
        )
    if found["body_kept"] < found["body_size"]:
        raise InvalidState(
            f"dead letter {letter_id}: only {found['body_kept']} of its {found['body_size']} "
            "bytes were kept; it cannot be re-submitted"
        )
    received = Received(found["body"], found["content_type"], message_id or found["message_id"])
    screened = screen(received)
    (outcome,) = submit_argo_batch([(screened.data, screened.message_id)])
    if isinstance(outcome, ValidationFailed):
        raise outcome
    dead_letters.remove([letter_id])
    log.info("intake: dead letter %d re-submitted as argo job %d", letter_id, outcome)
    return outcome


# How long the first message of a batch waits for more before the batch is taken: a burst
# from a producer arrives as one batch (one transaction, one broker round trip), a lone
# message waits only this long.
BATCH_WINDOW = 0.01


class IntakeConsumer(bootsteps.ConsumerStep):
    """Consumes the intake queue inside the argo worker (``edgecelery worker --argo``), up to
    ``intake_batch`` messages at a time."""

    def __init__(self, parent: Any, intake: bool = False, **kwargs: Any):
        self.enabled = intake
        self.pending: list[tuple[Any, Message]] = []
        self.hub: Any = None
        super().__init__(parent, **kwargs)

    def start(self, c: Any) -> None:
        self.hub = c.hub  # None in a worker without an event loop: then no batches
        super().start(c)

    def get_consumers(self, channel: Any) -> list[Consumer]:
        bound_decompression(get_settings().message_max_bytes)
        return [
            Consumer(
                channel,
                queues=[intake_queue()],
                on_message=self.on_message,  # raw: decoding is ours (workflows.inbound)
                on_decode_error=self.on_decode_error,
                prefetch_count=get_settings().intake_batch,
            )
        ]

    def on_decode_error(self, message: Message, exc: Exception) -> None:
        """kombu could not even make a message of it (a body it failed to decompress)."""
        received = Received.of(message)
        set_aside(message, letter(received, [("message", f"cannot be read: {describe(exc)}")]))

    def on_message(self, message: Message) -> None:
        received = Received.of(message)
        try:
            screened = screen(received)
        except ValidationFailed as exc:
            set_aside(message, letter(received, exc.errors))
            return
        self.pending.append((screened, message))
        if self.hub is None or len(self.pending) >= get_settings().intake_batch:
            self.take()
        elif len(self.pending) == 1:
            self.hub.call_later(BATCH_WINDOW, self.take)

    def take(self) -> None:
        """Handle what is pending: acknowledge it, or put it all back on the queue."""
        batch, self.pending = self.pending, []
        if batch:
            self._take(batch)

    def _take(self, batch: list[tuple[Screened, Message]]) -> None:
        """Store a batch. If it fails because of its content, each half is taken alone, down
        to the one message that fails, which is set aside: one bad message costs its batch
        about 2 log2(n) transactions, and its neighbours are stored."""
        try:
            receive_batch([screened for screened, _ in batch])
        except Exception as exc:
            if is_transient(exc):
                log.warning(
                    "intake: could not take %d messages now (%s); back on the queue",
                    len(batch),
                    describe(exc),
                )
                for _, message in batch:
                    message.requeue()
                return
            if len(batch) > 1:
                log.warning("intake: a batch of %d failed (%s); splitting it", len(batch), exc)
                half = len(batch) // 2
                self._take(batch[:half])
                self._take(batch[half:])
                return
            ((screened, message),) = batch
            log.exception("intake: message %s could not be stored", screened.message_id)
            problem = [("message", f"could not be stored: {describe(exc)}")]
            set_aside(message, letter(screened.received, problem, screened.data))
            return
        for _, message in batch:
            message.ack()
