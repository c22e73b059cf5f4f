"""Status mail, run by the argo worker: a consumer (``workflows.mail_consumer``) reads every
status message (a durable queue bound to the status exchange with ``#``), keeps the ones to
mail as ``MailRecord`` rows (``note_event``), and the task ``argo.mail`` sends each job's
pending records as one mail after the batch window.

Once each: the record's key is the event id, so a status message delivered twice is recorded
once; the sender claims a job's records (compare-and-set) before sending and marks them sent
after, so two runs of the task never mail the same event. A sender that dies between sending
and marking leaves a claim that another run takes over after ``CLAIM_STALE``: at that rare
point a mail may go twice rather than never.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from kombu import Queue
from sqlalchemy import or_, select, update

from edgeceleryapp import mail_content, mail_smtp
from edgeceleryapp.celery_app import app
from edgeceleryapp.db import session_scope
from edgeceleryapp.errors import PermanentError, TransientError
from edgeceleryapp.models import ArgoJob, JobEvent, MailRecord, utcnow
from edgeceleryapp.settings import get_settings
from edgeceleryapp.status_outbox import status_exchange
from tasks.retry_policy import StepTask, backoff

log = logging.getLogger(__name__)
CLAIM_STALE = timedelta(minutes=10)


def mail_queue() -> Queue:
    return Queue(
        get_settings().mail.queue, exchange=status_exchange(), routing_key="#", durable=True
    )


def note_event(body: dict[str, Any]) -> int | None:
    """Record a status message to mail; the Argo job's id if it is new and wanted."""
    if not mail_content.wanted(body, get_settings().mail.on):
        return None
    with session_scope() as s:
        job = s.get(ArgoJob, body["argo_job_id"])
        if job is None or not mail_content.recipients(job.email):
            return None
        if s.get(MailRecord, body["event_id"]) is not None:
            return None
        s.add(MailRecord(event_id=body["event_id"], argo_job_id=job.id))
    return body["argo_job_id"]


def _claim(argo_id: int) -> list[int]:
    """Take this job's unsent records (and stale claims); their event ids."""
    now = utcnow()
    with session_scope() as s:
        ids = list(
            s.scalars(
                select(MailRecord.event_id).where(
                    MailRecord.argo_job_id == argo_id,
                    MailRecord.sent_at.is_(None),
                    or_(MailRecord.claimed_at.is_(None), MailRecord.claimed_at < now - CLAIM_STALE),
                )
            )
        )
        if not ids:
            return []
        taken = s.execute(
            update(MailRecord)
            .where(
                MailRecord.event_id.in_(ids),
                or_(MailRecord.claimed_at.is_(None), MailRecord.claimed_at < now - CLAIM_STALE),
            )
            .values(claimed_at=now)
        )
        if taken.rowcount != len(ids):
            raise TransientError(f"argo job {argo_id}: mail records claimed meanwhile")
    return ids


def _release(ids: list[int]) -> None:
    with session_scope() as s:
        s.execute(update(MailRecord).where(MailRecord.event_id.in_(ids)).values(claimed_at=None))


def send_pending(argo_id: int) -> bool:
    """Mail this job's pending events as one mail; False if there was nothing to send."""
    settings = get_settings().mail
    ids = _claim(argo_id)
    if not ids:
        return False
    try:
        with session_scope() as s:
            job = s.get(ArgoJob, argo_id)
            events = [
                {
                    "time": e.time.isoformat() + "Z",
                    **{k: getattr(e, k) for k in ("from_state", "to_state", "message")},
                }
                for e in s.scalars(
                    select(JobEvent).where(JobEvent.id.in_(ids)).order_by(JobEvent.id)
                )
            ]
            data = (
                None
                if job is None
                else {
                    c: getattr(job, c)
                    for c in ("id", "name", "email", "state", "group_identifier", "output_url")
                }
            )
        if data and events and mail_content.recipients(data["email"]):
            mail_smtp.send(mail_content.compose(data, events, settings.sender), settings)
    except BaseException:
        _release(ids)
        raise
    with session_scope() as s:
        s.execute(update(MailRecord).where(MailRecord.event_id.in_(ids)).values(sent_at=utcnow()))
    return True


@app.task(name="argo.mail", base=StepTask, bind=True)
def mail_job(self: StepTask, argo_id: int) -> None:
    """Send an Argo job's pending status mail (scheduled one batch window after its first
    event); transient SMTP errors are retried with back-off, a bounded number of times."""
    try:
        send_pending(argo_id)
    except TransientError as exc:
        if self.request.retries >= get_settings().retry.max_retries:
            log.error("argo job %s: status mail not sent: %s", argo_id, exc)
            return
        raise self.retry(exc=exc, countdown=backoff(self.request.retries)) from None
    except PermanentError as exc:
        log.error("argo job %s: status mail not sent: %s", argo_id, exc)
