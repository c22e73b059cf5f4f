"""Intake: 10,000 Argo job messages accepted from the intake queue: validated, stored, and each
job's first chain published.

A producer puts the JSON messages (two subjobs at two sites, each with a ``message_id``) on the
intake queue of a private Redis, in batches of ``PRODUCER_BATCH``; the real intake consumer
(``workflows/intake_consumer.py``) runs in a real worker process, started as the argo worker is
(``--intake``) but serving no task queue, so the clock measures acceptance alone. Done when
every job is stored and the ``argo`` queue holds every job's first task.

    .venv/bin/python bench/intake.py [--messages 10000]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import ROOT, Figure, record
from throughput import cpu_seconds, stop

# The producer (a production system, not part of the service) publishes in batches of this
# many messages, with kombu's Producer.batch and our Redis channel (one client, one round trip
# per batch), so that on two cores its own CPU takes as little as it can from the consumer
# being measured.
PRODUCER_BATCH = 500


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument(
        "--consumers", type=int, default=1, help="intake consumer processes (argo workers)"
    )
    parser.add_argument("--quick", action="store_true", help="2,000 messages")
    args = parser.parse_args()
    if args.quick:
        args.messages = min(args.messages, 2000)

    from edgeceleryapp.cli.demo import write_config
    from edgeceleryapp.devstack import RedisServer, wait_for, wait_for_workers

    root = Path(tempfile.mkdtemp(prefix="edgecelery-intake-"))
    redis_server = RedisServer(root / "redis").start()
    config = write_config(root, redis_server.url, ("hep_cluster", "mira"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGECELERY_")}
    env["EDGECELERY_CONFIG"] = str(config)
    os.environ.update(env)

    import redis
    from kombu import Connection
    from sqlalchemy import func, select

    from edgeceleryapp.brokertransport import transport_for
    from edgeceleryapp.db import init_db, read_scope
    from edgeceleryapp.models import ArgoJob
    from workflows.intake_consumer import intake_queue

    init_db()
    names = [f"intake{n}" for n in range(args.consumers)]
    workers = [
        subprocess.Popen(
            [
                sys.executable, "-m", "celery", "-A", "edgeceleryapp", "worker",
                "-Q", "bench.nothing", "-n", f"{name}@%h", "-c", "1", "--intake",
                "--without-gossip", "--without-mingle", "--loglevel", "WARNING",
            ],
            env={**env, "PYTHONPATH": str(ROOT)},
            stdout=(root / f"{name}.log").open("w"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        for name in names
    ]  # fmt: skip
    client = redis.Redis.from_url(redis_server.url)

    def message(i: int) -> dict:
        return {
            "name": f"alpGen{i}",
            "user_id": "bench",
            "group_identifier": f"intake.{i // 100}",
            "job_status_routing_key": "bench_status",
            "subjobs": [
                {"name": "gen", "site": "hep_cluster", "application": "alpGen",
                 "wall_time_minutes": 60, "num_nodes": 1, "processes_per_node": 1},
                {"name": "sim", "site": "mira", "application": "wjets",
                 "wall_time_minutes": 60, "num_nodes": 2, "processes_per_node": 16},
            ],
        }  # fmt: skip

    try:
        wait_for_workers(redis_server.url, names)
        cpu0 = cpu_seconds([w.pid for w in workers])
        queue = intake_queue()
        start = time.perf_counter()
        with Connection(redis_server.url, transport=transport_for(redis_server.url)) as conn:
            producer = conn.Producer(serializer="json")
            for first in range(0, args.messages, PRODUCER_BATCH):
                with producer.batch():
                    for i in range(first, min(first + PRODUCER_BATCH, args.messages)):
                        producer.publish(
                            message(i),
                            exchange=queue.exchange,
                            routing_key=queue.routing_key,
                            declare=[queue],
                            message_id=f"bench-{i}",
                        )
        published = time.perf_counter() - start

        def accepted() -> bool:
            with read_scope() as s:
                stored = s.scalar(select(func.count()).select_from(ArgoJob))
            return stored >= args.messages and client.llen("argo") >= args.messages

        wait_for(accepted, 900, "every message to be accepted", interval=0.2)
        elapsed = time.perf_counter() - start
        cpu = cpu_seconds([w.pid for w in workers]) - cpu0
    finally:
        for w in workers:
            stop(w)
        redis_server.stop()
    figures = [
        Figure(f"{args.messages:,} messages accepted", elapsed, "s",
               "< 20" if args.messages >= 10_000 else ""),
        Figure("messages accepted per second", args.messages / elapsed, "/s"),
        Figure("producer's publishing time (included)", published, "s"),
        Figure("intake worker CPU per message", 1000 * cpu / args.messages, "ms"),
    ]  # fmt: skip
    record(
        f"intake-{args.consumers}",
        f"Intake: {args.messages:,} Argo job messages (2 subjobs each) from the intake queue, "
        f"{args.consumers} consumer process(es)",
        figures,
    )


if __name__ == "__main__":
    sys.exit(main())
