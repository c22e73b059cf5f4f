"""The argo worker's consumer of status messages for mail (see tasks/mail.py).

Anyone who may publish on the status exchange reaches this queue, so its messages are screened
as intake's are (``workflows.inbound``): one that cannot be read, or that makes recording fail
for a reason other than the database being away, is set aside as a dead letter (source
``mail``, no answer: answering a status message with another would loop back here) instead of
coming back forever.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import bootsteps
from kombu import Consumer, Message

from edgeceleryapp import dead_letters
from edgeceleryapp.errors import ValidationFailed
from edgeceleryapp.settings import get_settings
from tasks.mail import mail_job, mail_queue, note_event
from workflows.inbound import (
    Received,
    bound_decompression,
    describe,
    is_transient,
    screen,
    set_aside,
    usable_id,
)

log = logging.getLogger(__name__)


def letter(received: Received, errors: list[tuple[str, str]]) -> dead_letters.Letter:
    return dead_letters.Letter(
        "mail", received.body, received.content_type, usable_id(received.message_id), errors
    )


class MailConsumer(bootsteps.ConsumerStep):
    """In the argo worker (``--mail``, given when ``mail.enabled``): status messages in,
    mail records and ``argo.mail`` tasks out."""

    def __init__(self, parent: Any, mail: bool = False, **kwargs: Any):
        self.enabled = mail and get_settings().mail.enabled
        super().__init__(parent, **kwargs)

    def get_consumers(self, channel: Any) -> list[Consumer]:
        bound_decompression(get_settings().message_max_bytes)
        return [
            Consumer(
                channel,
                queues=[mail_queue()],
                on_message=self.on_message,  # raw: decoding is ours (workflows.inbound)
                on_decode_error=self.on_decode_error,
                prefetch_count=10,
            )
        ]

    def on_decode_error(self, message: Message, exc: Exception) -> None:
        """kombu could not even make a message of it (a body it failed to decompress)."""
        received = Received.of(message)
        set_aside(message, letter(received, [("message", f"cannot be read: {describe(exc)}")]))

    def on_message(self, message: Message) -> None:
        received = Received.of(message)
        try:
            body = screen(received).data
        except ValidationFailed as exc:
            set_aside(message, letter(received, exc.errors))
            return
        try:
            argo_id = note_event(body) if isinstance(body, dict) else None
            if argo_id is not None:
                mail_job.apply_async(
                    (argo_id,),
                    queue="argo",
                    countdown=get_settings().mail.batch_window,
                    argsrepr=f"(argo={argo_id})",
                )
        except Exception as exc:
            if is_transient(exc):
                log.warning("mail: cannot record a status message now (%s); it goes back", exc)
                message.requeue()
                return
            log.exception("mail: a status message could not be recorded")
            set_aside(
                message, letter(received, [("message", f"cannot be recorded: {describe(exc)}")])
            )
            return
        message.ack()
