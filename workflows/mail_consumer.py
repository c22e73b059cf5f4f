"""The argo worker's consumer of status messages for mail (see tasks/mail.py)."""

from __future__ import annotations

import logging
from typing import Any

from celery import bootsteps
from kombu import Consumer

from edgeceleryapp.settings import get_settings
from tasks.mail import mail_job, mail_queue, note_event

log = logging.getLogger(__name__)


class MailConsumer(bootsteps.ConsumerStep):
    """In the argo worker (``--mail``, given when ``mail.enabled``): status messages in,
    mail records and ``argo.mail`` tasks out."""

    def __init__(self, parent: Any, mail: bool = False, **kwargs: Any):
        self.enabled = mail and get_settings().mail.enabled
        super().__init__(parent, **kwargs)

    def get_consumers(self, channel: Any) -> list[Consumer]:
        return [
            Consumer(
                channel,
                queues=[mail_queue()],
                callbacks=[self.on_message],
                accept=["json"],
                prefetch_count=10,
            )
        ]

    def on_message(self, body: Any, message: Any) -> None:
        try:
            argo_id = note_event(body) if isinstance(body, dict) else None
            if argo_id is not None:
                mail_job.apply_async(
                    (argo_id,),
                    queue="argo",
                    countdown=get_settings().mail.batch_window,
                    argsrepr=f"(argo={argo_id})",
                )
        except Exception:
            log.exception("mail: could not record a status message now; it goes back")
            message.requeue()
            return
        message.ack()
