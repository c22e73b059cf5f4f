"""Reading status messages the way a production system would: a queue bound to the status
exchange with a job's ``job_status_routing_key`` (the HUST'17 paper, 2.2.1).

``edgecelery watch``, ``argo show --follow``, the demo and the integration tests all listen this
way, so they all see what a subscriber sees. Delivery is at least once, so a listener that shows
each change once passes a ``Seen`` and gets each ``event_id`` once.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from contextlib import suppress
from types import TracebackType
from typing import Any

from kombu import Queue

from edgeceleryapp.broker_connection import check, connect, for_url
from edgeceleryapp.status_outbox import status_exchange


class Seen:
    """Event ids already delivered; bounded, since a watch may run for weeks."""

    def __init__(self, size: int = 10_000):
        self._order: deque[int] = deque()
        self._ids: set[int] = set()
        self._size = size

    def add(self, event_id: int | None) -> bool:
        """True the first time an id is seen (a message without one always counts)."""
        if event_id is None:
            return True
        if event_id in self._ids:
            return False
        self._ids.add(event_id)
        self._order.append(event_id)
        if len(self._order) > self._size:
            self._ids.discard(self._order.popleft())
        return True


class StatusStream:
    """A consumer of the status messages for ``routing_key`` (topic patterns allowed), each
    body handed to ``on_body`` while ``drain`` waits.

    Bound on creation, so nothing published afterwards is missed. Without ``queue_name`` the
    queue is exclusive and nameless: it goes away with the listener."""

    def __init__(
        self,
        broker_url: str,
        routing_key: str,
        on_body: Callable[[dict[str, Any]], None],
        *,
        seen: Seen | None = None,
        queue_name: str = "",
    ):
        self._on_body = on_body
        self._seen = seen
        settings = for_url(broker_url)
        check(settings)
        self._conn = connect(settings)
        queue = Queue(
            queue_name,
            exchange=status_exchange(),
            routing_key=routing_key,
            exclusive=not queue_name,
            auto_delete=True,
        )
        self._consumer = self._conn.Consumer(queue, callbacks=[self._handle], accept=["json"])
        self._consumer.consume()

    def _handle(self, body: Any, message: Any) -> None:
        message.ack()
        if not isinstance(body, dict):
            return
        if self._seen is None or self._seen.add(body.get("event_id")):
            self._on_body(body)

    def drain(self, timeout: float) -> None:
        """Deliver what arrives within ``timeout`` seconds (nothing arriving is no error)."""
        with suppress(TimeoutError):
            self._conn.drain_events(timeout=timeout)

    def close(self) -> None:
        self._consumer.cancel()
        self._conn.release()

    def __enter__(self) -> StatusStream:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
