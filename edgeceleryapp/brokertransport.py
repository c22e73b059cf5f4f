"""The kombu transport our status publisher uses, picked by the broker URL's scheme.

kombu's Redis channel builds a new ``redis.Redis`` client (and its table of some 170 response
callbacks) for every command it sends: a status message cost two of them, half of its CPU
(measured with cProfile in bench/profiles.py). This channel keeps one client per channel;
the client takes a connection from the channel's pool for each command, as before, so it is
as safe to share as the pool itself. Other schemes keep kombu's own transport.

Only the status publisher uses it: Celery's task messages go through kombu's transport
unchanged, as they do in the plain-Celery ceiling that bench/throughput.py compares with.
"""

from __future__ import annotations

from typing import Any

from kombu.transport import redis as kombu_redis


class ReusingRedisChannel(kombu_redis.Channel):
    _sync_client: Any = None

    def _create_client(self, asynchronous: bool = False) -> Any:
        if asynchronous:
            return super()._create_client(asynchronous=True)
        if self._sync_client is None:
            self._sync_client = super()._create_client()
        return self._sync_client


class ReusingRedisTransport(kombu_redis.Transport):
    Channel = ReusingRedisChannel


# URL scheme -> transport class; a scheme not listed uses kombu's default for it.
TRANSPORTS: dict[str, type] = {
    "redis": ReusingRedisTransport,
    "rediss": ReusingRedisTransport,
}


def transport_for(url: str) -> type | None:
    return TRANSPORTS.get(url.split("://", 1)[0].lower())
