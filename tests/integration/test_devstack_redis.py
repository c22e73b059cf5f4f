"""The private Redis keeps its messages across a crash (AOF everysec), and forgets them only when
asked to (the chaos benchmark's restart that loses every message)."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis

from edgeceleryapp.devstack import RedisServer, wait_for

pytestmark = pytest.mark.integration


def test_a_killed_redis_restarts_with_its_messages_unless_emptied(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "redis").start()
    client = redis.Redis.from_url(server.url)
    try:
        client.lpush("queue", "message")
        # everysec: the write reaches the AOF (Redis 7's multi-part AOF: the *.incr.aof) within
        # a second or two.
        aof = tmp_path / "redis"
        wait_for(lambda: any(p.stat().st_size for p in aof.rglob("*.incr.aof")), 5, "the AOF write")
        server.kill()
        server.start()
        assert client.lrange("queue", 0, -1) == [b"message"]
        server.kill()
        server.start(empty=True)
        assert client.lrange("queue", 0, -1) == []
        assert server.log.exists()  # the log of the earlier runs is kept
    finally:
        server.stop()
