"""Status messages: every JobEvent goes out as JSON on the status exchange (a topic exchange),
routed with the Argo job's ``job_status_routing_key`` (seed 000 2.2.1).

Publishing happens after the state change has committed, so a message never announces a state
the database does not hold. A failed publish leaves the event marked unpublished; ``flush``
sends those again. Delivery is at least once: consumers deduplicate on ``event_id``.
"""

from __future__ import annotations

import logging
from typing import Any

from kombu import Connection, Exchange
from kombu.pools import producers
from sqlalchemy import bindparam, select, update

from edgeceleryapp.db import engine, read_scope
from edgeceleryapp.models import ArgoJob, JobEvent, SubJob
from edgeceleryapp.settings import get_settings

log = logging.getLogger(__name__)

_connections: dict[str, Connection] = {}


def status_exchange() -> Exchange:
    return Exchange(get_settings().status_exchange, type="topic", durable=True)


def _conn() -> Connection:
    """One connection object per broker URL; kombu's pool hands out producers on it."""
    url = get_settings().broker_url
    if url not in _connections:
        _connections[url] = Connection(url)
    return _connections[url]


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
    try:
        with producers[_conn()].acquire(block=True, timeout=10) as producer:
            for key, body in messages:
                producer.publish(
                    body,
                    exchange=exchange,
                    routing_key=key,
                    serializer="json",
                    declare=[exchange],
                    retry=True,
                    retry_policy={"max_retries": 3, "interval_start": 0.2, "interval_step": 0.5},
                )
    except Exception as exc:  # any broker failure: the outbox keeps the events
        log.warning("status publish failed, will be sent again later: %s", exc)
        return False
    return True


def send(messages: list[tuple[int, str, dict[str, Any]]]) -> None:
    """Publish (event id, routing key, body) triples built in the transaction that committed
    the events, then mark them sent. Building them there saves reading the events back: a
    state change costs one write transaction and this mark, not three transactions."""
    if messages and publish([(key, b) for _, key, b in messages]):
        _mark_published([event_id for event_id, _, _ in messages])


_MARK = (
    update(JobEvent.__table__)
    .where(JobEvent.__table__.c.id.in_(bindparam("ids", expanding=True)))
    .values(published=True)
)


def _mark_published(event_ids: list[int]) -> None:
    """One UPDATE on a plain connection: half of all write transactions are this mark, and an
    ORM session around it cost more than the statement."""
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
            .where(JobEvent.id.in_(event_ids), JobEvent.published.is_(False))
            .order_by(JobEvent.id)
        ).all()
        messages = [(routing_key_for(a), event_body(e, sj, a)) for e, sj, a in rows]
    if publish(messages):
        _mark_published(event_ids)


def flush(argo_job_id: int | None = None, subjob_id: int | None = None) -> None:
    """Send again every unpublished event of one job (or of all jobs)."""
    query = select(JobEvent.id).where(JobEvent.published.is_(False))
    if argo_job_id is not None:
        query = query.where(JobEvent.argo_job_id == argo_job_id)
    if subjob_id is not None:
        query = query.where(JobEvent.subjob_id == subjob_id)
    with read_scope() as s:
        ids = list(s.scalars(query.order_by(JobEvent.id)))
    publish_events(ids)
