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
from kombu import Consumer, Exchange, Queue

from edgeceleryapp.errors import ValidationFailed
from edgeceleryapp.models import utcnow
from edgeceleryapp.settings import get_settings
from edgeceleryapp.status import publish
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


def receive(body: Any, message_id: str | None) -> int | None:
    """Handle one intake message; the job's id, or None if it was refused."""
    # Imported here: the Celery app installs this consumer, and intake imports the app.
    from workflows.intake import submit_argo

    try:
        argo_id = submit_argo(body, intake_key=message_id)
    except ValidationFailed as exc:
        log.warning("intake: refused message %s: %s", message_id, exc)
        publish([rejection(body, exc.errors)])
        return None
    log.info("intake: message %s is argo job %s", message_id, argo_id)
    return argo_id


class IntakeConsumer(bootsteps.ConsumerStep):
    """Consumes the intake queue inside the argo worker (``edgecelery worker --argo``)."""

    def __init__(self, parent: Any, intake: bool = False, **kwargs: Any):
        self.enabled = intake
        super().__init__(parent, **kwargs)

    def get_consumers(self, channel: Any) -> list[Consumer]:
        return [
            Consumer(
                channel,
                queues=[intake_queue()],
                callbacks=[self.on_message],
                accept=["json"],
                prefetch_count=1,
            )
        ]

    def on_message(self, body: Any, message: Any) -> None:
        try:
            receive(body, message.properties.get("message_id"))
        except Exception:
            log.exception("intake: could not take a message now; it goes back on the queue")
            message.requeue()
            return
        message.ack()
