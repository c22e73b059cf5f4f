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
import sys
import tempfile
import time
from pathlib import Path

from common import Figure, parse_args, record
from throughput import cpu_seconds

# The producer (a production system, not part of the service) publishes in batches of this
# many messages, with kombu's Producer.batch and our Redis channel (one client, one round trip
# per batch), so that on two cores its own CPU takes as little as it can from the consumer
# being measured.
PRODUCER_BATCH = 500


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


def accept(broker_url: str, messages: int, pids: list[int]) -> tuple[float, float, float]:
    """Publish ``messages`` and wait until every one is accepted: the seconds that took, the
    seconds publishing took, and the CPU seconds the intake workers used."""
    import redis
    from kombu import Connection
    from sqlalchemy import func, select

    from edgeceleryapp.brokertransport import transport_for
    from edgeceleryapp.db import read_scope
    from edgeceleryapp.devstack import wait_for
    from edgeceleryapp.models import ArgoJob
    from workflows.intake_consumer import intake_queue

    client = redis.Redis.from_url(broker_url)
    cpu0 = cpu_seconds(pids)
    queue = intake_queue()
    start = time.perf_counter()
    with Connection(broker_url, transport=transport_for(broker_url)) as conn:
        producer = conn.Producer(serializer="json")
        for first in range(0, messages, PRODUCER_BATCH):
            with producer.batch():
                for i in range(first, min(first + PRODUCER_BATCH, messages)):
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
        return stored >= messages and client.llen("argo") >= messages

    wait_for(accepted, 900, "every message to be accepted", interval=0.2)
    return time.perf_counter() - start, published, cpu_seconds(pids) - cpu0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument(
        "--consumers", type=int, default=1, help="intake consumer processes (argo workers)"
    )
    args = parse_args(parser, "2,000 messages", messages=2000)

    from edgeceleryapp.devstack import DevStack

    root = Path(tempfile.mkdtemp(prefix="edgecelery-intake-"))
    names = [f"intake{n}" for n in range(args.consumers)]
    with DevStack.running(root, ("hep_cluster", "mira"), workers=()) as stack:
        workers = [
            stack.start_worker(
                name,
                app="edgeceleryapp",
                queue="bench.nothing",
                loglevel="WARNING",
                options=("--intake",),
                wait=False,
            )
            for name in names
        ]
        stack.wait_for_workers(names)
        elapsed, published, cpu = accept(stack.broker_url, args.messages, [w.pid for w in workers])
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
