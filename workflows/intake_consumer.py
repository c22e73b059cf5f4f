"""The intake queue (seed 000 2.2.1, Argo's UserJobReceiver): production systems put Argo job
messages, plain JSON, on ``settings.intake_queue``; the argo worker consumes them.

A valid message becomes a running Argo job. An invalid one is acknowledged and answered with a
status message naming every bad field (on the message's own job_status_routing_key when it
has a usable one), so a bad message never blocks the queue and no job is half-stored. When the
database or broker is away the message goes back on the queue. The producer's ``message_id``
makes redelivery safe: one message, one job.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from celery import bootsteps
from kombu import Consumer, Exchange, Message, Queue

from edgeceleryapp.errors import ValidationFailed
from edgeceleryapp.models import utcnow
from edgeceleryapp.settings import get_settings
from edgeceleryapp.status_outbox import publish
from workflows.intake import submit_argo_batch
from workflows.schemas import ROUTING_KEY_PATTERN

log = logging.getLogger(__name__)


def intake_queue() -> Queue:
    name = get_settings().intake_queue
    return Queue(name, Exchange(name, type="direct", durable=True), routing_key=name, durable=True)


def rejection(body: Any, errors: list[tuple[str, str]]) -> tuple[str, dict[str, Any]]:
    """The status message that tells a producer why its job message was refused."""
    key = body.get("job_status_routing_key") if isinstance(body, dict) else None
    if not isinstance(key, str) or not re.match(ROUTING_KEY_PATTERN, key):
        key = get_settings().default_status_routing_key
    user_id = body.get("user_id") if isinstance(body, dict) else None
    return key, {
        "kind": "intake",
        "argo_job_id": None,
        "user_id": user_id if isinstance(user_id, str) else None,
        "from_state": "",
        "to_state": "REJECTED",
        "time": utcnow().isoformat() + "Z",
        "message": "; ".join(f"{f}: {p}" for f, p in errors),
        "errors": [{"field": f, "problem": p} for f, p in errors],
    }


def receive_batch(items: list[tuple[Any, str | None]]) -> list[int | None]:
    """Handle intake messages (body, message id) together; each job's id, or None for a
    refused message, which is answered with a rejection status message."""
    outcomes = submit_argo_batch(items)
    rejections = []
    for (body, message_id), outcome in zip(items, outcomes, strict=True):
        if isinstance(outcome, ValidationFailed):
            log.warning("intake: refused message %s: %s", message_id, outcome)
            rejections.append(rejection(body, outcome.errors))
        else:
            log.info("intake: message %s is argo job %s", message_id, outcome)
    publish(rejections)
    return [None if isinstance(o, ValidationFailed) else o for o in outcomes]


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
        return [
            Consumer(
                channel,
                queues=[intake_queue()],
                callbacks=[self.on_message],
                accept=["json"],
                prefetch_count=get_settings().intake_batch,
            )
        ]

    def on_message(self, body: Any, message: Message) -> None:
        self.pending.append((body, message))
        if self.hub is None or len(self.pending) >= get_settings().intake_batch:
            self.take()
        elif len(self.pending) == 1:
            self.hub.call_later(BATCH_WINDOW, self.take)

    def take(self) -> None:
        """Handle what is pending; acknowledge it, or put it all back on the queue."""
        batch, self.pending = self.pending, []
        if not batch:
            return
        try:
            receive_batch([(body, m.properties.get("message_id")) for body, m in batch])
        except Exception:
            log.exception("intake: could not take %d messages now; back on the queue", len(batch))
            for _, message in batch:
                message.requeue()
            return
        for _, message in batch:
            message.ack()
