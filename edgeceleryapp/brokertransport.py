"""The broker connection our own publishing uses (status messages, intake's first tasks):
kombu, with a transport picked by the broker URL's scheme, and messages sent in batches.

kombu's Redis channel builds a new ``redis.Redis`` client (and its table of some 170 response
callbacks) for every command it sends, and asks Redis for an exchange's bindings before every
message: a status message cost two clients and two round trips, most of its CPU (py-spy,
bench/profiles.py). This channel keeps one client per channel (the client takes a connection
from the channel's pool for each command, as before, so it is as safe to share as the pool)
and reads an exchange's bindings once per publish batch. Other schemes keep kombu's own
transport.

Only our own publishers use it, on a connection of their own: Celery's connection (its
workers' consumers, `celery inspect`, Flower) keeps kombu's transport for the URL's scheme, so
that ``connection.info()`` names a transport every Celery tool knows. Both connect with the
TLS options and login of ``[broker]`` (edgeceleryapp/broker_connection.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from kombu import Connection, Producer
from kombu.pools import producers
from kombu.transport import redis as kombu_redis

from edgeceleryapp.broker_connection import connection_options
from edgeceleryapp.settings import get_settings


class ReusingRedisChannel(kombu_redis.Channel):
    _sync_client: Any = None
    _batch: Any = None  # the publish batch being routed, if any
    _tables_of: Any = None  # the batch whose exchange bindings ``_tables`` holds
    _tables: dict[str, list] | None = None

    def _create_client(self, asynchronous: bool = False) -> Any:
        if asynchronous:
            return super()._create_client(asynchronous=True)
        if self._sync_client is None:
            self._sync_client = super()._create_client()
        return self._sync_client

    def basic_publish(self, message: Any, exchange: str, routing_key: str, **kwargs: Any) -> Any:
        self._batch = kwargs.get("_publish_batch")
        try:
            return super().basic_publish(message, exchange, routing_key, **kwargs)
        finally:
            self._batch = None

    def get_table(self, exchange: str) -> list:
        """Within one batch the bindings are read once: the batch is routed as if published
        at once, when its first message was."""
        if self._batch is None:
            return super().get_table(exchange)
        if self._tables_of is not self._batch or self._tables is None:
            self._tables_of, self._tables = self._batch, {}
        if exchange not in self._tables:
            self._tables[exchange] = super().get_table(exchange)
        return self._tables[exchange]


class ReusingRedisTransport(kombu_redis.Transport):
    Channel = ReusingRedisChannel


# URL scheme -> transport class; a scheme not listed uses kombu's default for it.
TRANSPORTS: dict[str, type] = {
    "redis": ReusingRedisTransport,
    "rediss": ReusingRedisTransport,
}


def transport_for(url: str) -> type | None:
    return TRANSPORTS.get(url.split("://", 1)[0].lower())


_connections: dict[str, Connection] = {}


def connection(url: str) -> Connection:
    """One connection object per broker URL; kombu's pool hands out producers on it. The
    configured broker gets the TLS options and login of ``[broker]``."""
    if url not in _connections:
        settings = get_settings()
        options = connection_options(settings) if url == settings.broker_url else {}
        _connections[url] = Connection(url, transport=transport_for(url), **options)
    return _connections[url]


@contextmanager
def batch_producer(url: str) -> Iterator[Producer]:
    """A pooled producer whose messages go out together when the block ends (Redis: in one
    round trip); if the block fails, none of the unsent ones go."""
    with producers[connection(url)].acquire(block=True, timeout=10) as producer, producer.batch():
        yield producer
