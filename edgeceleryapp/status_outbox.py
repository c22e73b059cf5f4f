"""Status messages: every JobEvent goes out as JSON on the status exchange (a topic exchange),
routed with the Argo job's ``job_status_routing_key`` (the HUST'17 paper, 2.2.1).

Publishing happens after the state change has committed, so a message never announces a state
the database does not hold. A failed publish leaves the event marked unpublished; ``flush``
sends those again (``argo.finish`` for its job, the ``argo.resend_status`` sweep for all).
Delivery is at least once: consumers deduplicate on ``event_id``.

Marking events "published" was half of all write transactions. The state-change path
(``send``) therefore does not write the mark itself: it leaves the ids with this process, and
the mark rides on the process's next write transaction (``pending_marks``), or is written by a
timer ``MARK_DELAY`` seconds later when no transaction comes. A process that dies in between
leaves its last events unmarked; they go out once more, which consumers tolerate.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

from celery import bootsteps
from kombu import Exchange
from kombu.common import maybe_declare
from sqlalchemy import Connection as DBConnection
from sqlalchemy import bindparam, false, select, update
from sqlalchemy.orm import Session

from edgeceleryapp import broker_permissions
from edgeceleryapp.brokertransport import batch_producer
from edgeceleryapp.db import engine, read_scope
from edgeceleryapp.models import ArgoJob, JobEvent, SubJob, utcnow
from edgeceleryapp.settings import get_settings

log = logging.getLogger(__name__)


def status_exchange() -> Exchange:
    """The topic exchange; a site worker on RabbitMQ publishes to it without declaring it
    (edgeceleryapp/broker_permissions.py)."""
    return Exchange(
        get_settings().status_exchange,
        type="topic",
        durable=True,
        no_declare=not broker_permissions.declares_shared(),
    )


class CentralDeclaresStatusExchange(bootsteps.StartStopStep):
    """In the worker that consumes ``argo``: declare the status exchange when the consumer
    connects, so that site workers, which publish to it without declaring it, find it."""

    label = "CentralDeclaresStatusExchange"
    requires = ("celery.worker.consumer.tasks:Tasks",)

    def start(self, c: Any) -> None:
        if broker_permissions.ARGO_QUEUE in c.app.amqp.queues.consume_from:
            maybe_declare(status_exchange(), c.connection.default_channel, retry=True)


def body(event: JobEvent, name: str, site: str | None) -> dict[str, Any]:
    """The status message of one event; ``name`` and ``site`` are its subjob's (or its Argo
    job's name and None)."""
    return {
        "event_id": event.id,
        "kind": "argo" if event.subjob_id is None else "subjob",
        "argo_job_id": event.argo_job_id,
        "subjob_id": event.subjob_id,
        "name": name,
        "site": site,
        "from_state": event.from_state,
        "to_state": event.to_state,
        "time": event.time.isoformat() + "Z",
        "message": event.message,
    }


def event_body(event: JobEvent, subjob: SubJob | None, argo: ArgoJob | None) -> dict[str, Any]:
    name = subjob.name if subjob else argo.name if argo else ""
    return body(event, name, subjob.site if subjob else None)


def routing_key(job_status_routing_key: str | None) -> str:
    return job_status_routing_key or get_settings().default_status_routing_key


def routing_key_for(argo: ArgoJob | None) -> str:
    return routing_key(argo.job_status_routing_key if argo is not None else None)


def publish(messages: list[tuple[str, dict[str, Any]]]) -> bool:
    """Send (routing_key, body) pairs; False if the broker could not be reached."""
    if not messages:
        return True
    exchange = status_exchange()
    retry_policy = {"max_retries": 3, "interval_start": 0.2, "interval_step": 0.5}
    try:
        with batch_producer(get_settings().broker_url) as producer:
            # Once per batch, not per message: even kombu's cached check cost 15% of a publish.
            producer.maybe_declare(exchange, retry=True, **retry_policy)
            for key, body in messages:
                producer.publish(
                    body,
                    exchange=exchange,
                    routing_key=key,
                    serializer="json",
                    retry=True,
                    retry_policy=retry_policy,
                )
    except Exception as exc:  # any broker failure: the outbox keeps the events
        log.warning("status publish failed, will be sent again later: %s", exc)
        return False
    return True


def send(messages: list[tuple[int, str, dict[str, Any]]], mark_now: bool = False) -> None:
    """Publish (event id, routing key, body) triples built in the transaction that committed
    the events; their "published" mark is left to ``pending_marks`` or the timer, unless
    ``mark_now`` (an operator's command, whose process may end at once). Building them there
    saves reading the events back."""
    if messages and publish([(key, b) for _, key, b in messages]):
        ids = [event_id for event_id, _, _ in messages]
        if mark_now:
            _mark_published(ids)
        else:
            _marks.add(ids)


_MARK = (
    update(JobEvent.__table__)
    .where(JobEvent.__table__.c.id.in_(bindparam("ids", expanding=True)))
    .values(published=True)
)

# Events re-sent per broker batch and transaction when flushing a backlog.
FLUSH_CHUNK = 500
# Seconds a "published" mark may wait for a write transaction to ride on.
MARK_DELAY = 0.5


class _PendingMarks:
    """Ids of events this process published and has not yet marked."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.ids: list[int] = []
        self.timer: threading.Timer | None = None

    def add(self, ids: list[int]) -> None:
        with self.lock:
            self.ids += ids
            if self.timer is None:
                self.timer = threading.Timer(MARK_DELAY, self.write)
                self.timer.daemon = True
                self.timer.start()

    def take(self) -> list[int]:
        with self.lock:
            ids, self.ids = self.ids, []
            return ids

    def give_back(self, ids: list[int]) -> None:
        with self.lock:
            self.ids = ids + self.ids

    def write(self) -> None:
        """The timer's (and a worker's last) write: whatever no transaction took along."""
        with self.lock:
            self.timer = None
        ids = self.take()
        if not ids:
            return
        try:
            _mark_published(ids)
        except Exception as exc:  # the events are sent again later; nothing is lost
            log.warning("could not mark %d status messages sent: %s", len(ids), exc)


_marks = _PendingMarks()


def _forget_marks() -> None:
    """A forked child starts with none of its parent's marks (nor its timer thread)."""
    global _marks
    _marks = _PendingMarks()


os.register_at_fork(after_in_child=_forget_marks)


@contextmanager
def pending_marks(conn: DBConnection | Session) -> Iterator[None]:
    """Inside a write transaction: write this process's pending marks in it. If the
    transaction's body fails, the marks wait for the next one."""
    ids = _marks.take()
    try:
        if ids:
            conn.execute(_MARK, {"ids": ids})
        yield
    except BaseException:
        _marks.give_back(ids)
        raise


def write_pending_marks() -> None:
    """Write the marks now (a worker process shutting down, tests)."""
    _marks.write()


def _mark_published(event_ids: list[int]) -> None:
    """One UPDATE on a plain connection: an ORM session around it cost more than the
    statement."""
    with engine().begin() as conn:
        conn.execute(_MARK, {"ids": event_ids})


def publish_events(event_ids: list[int]) -> None:
    """Publish the given committed events and mark them sent."""
    if not event_ids:
        return
    with read_scope() as s:
        rows = s.execute(
            select(JobEvent, SubJob, ArgoJob)
            .outerjoin(SubJob, SubJob.id == JobEvent.subjob_id)
            .outerjoin(ArgoJob, ArgoJob.id == JobEvent.argo_job_id)
            .where(JobEvent.id.in_(event_ids), JobEvent.published == false())
            .order_by(JobEvent.id)
        ).all()
        messages = [(routing_key_for(a), event_body(e, sj, a)) for e, sj, a in rows]
    if publish(messages):
        _mark_published(event_ids)


def flush(
    argo_job_id: int | None = None, subjob_id: int | None = None, older_than: float = 0.0
) -> int:
    """Send again every unpublished event of one job (or of all jobs); how many. Events
    younger than ``older_than`` seconds are spared: their mark may still be pending in the
    process that published them."""
    query = select(JobEvent.id).where(JobEvent.published == false())
    if argo_job_id is not None:
        query = query.where(JobEvent.argo_job_id == argo_job_id)
    if subjob_id is not None:
        query = query.where(JobEvent.subjob_id == subjob_id)
    if older_than:
        query = query.where(JobEvent.time < utcnow() - timedelta(seconds=older_than))
    with read_scope() as s:
        ids = list(s.scalars(query.order_by(JobEvent.id)))
    for start in range(0, len(ids), FLUSH_CHUNK):
        publish_events(ids[start : start + FLUSH_CHUNK])
    return len(ids)
