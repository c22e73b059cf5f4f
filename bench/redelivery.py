"""Redelivery after a dropped connection, on Redis and on RabbitMQ: a site worker is SIGKILLed
while it runs a long step (a preprocess script that waits), a new worker for the site is
started at once, and the time from the kill until the step starts again is measured.

What brings the step back differs by broker:

- RabbitMQ returns a consumer's unacknowledged messages to the queue the moment its
  connection closes (the kill closes the socket), so the new worker gets the task as soon as
  it consumes.
- Redis has no connection-bound acknowledgement: kombu keeps the task in ``unacked`` and puts
  it back after ``visibility_timeout``. The reconciler is the faster path: once the step's
  lease (``lease_seconds``) has lapsed and the subjob has made no progress for
  ``redrive_after``, the site's own sweep sends the step again.

Each broker runs twice: with the shipped defaults (visibility_timeout 900 s, lease_seconds
30 s, redrive_after 45 s) and with the quick settings of the integration tests (4 s, 3 s,
10 s, retry back-off at most 1 s). The time for the new worker to answer a ping is printed
beside, as the floor.

    .venv/bin/python bench/redelivery.py [--quick]    (--quick: the quick settings only)
"""

from __future__ import annotations

import argparse
import signal
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from common import Figure, parse_args, record

from edgeceleryapp import applications
from edgeceleryapp.api import submit_balsam_job
from edgeceleryapp.devstack import DevStack, wait_for
from edgeceleryapp.rabbitmq_server import RabbitMQServer
from edgeceleryapp.throwaway_ca import BrokerTLS

SITE = "alpha"
SETTINGS = {
    "shipped": "",
    "quick": (
        "visibility_timeout = 4\nlease_seconds = 3\nredrive_after = 10\n"
        "[retry]\nmax_retries = 3\nbackoff_base = 0.2\nbackoff_max = 1.0"
    ),
}


def waiting_preprocess(root: Path) -> tuple[Path, Path]:
    """An application whose preprocess appends its start time to one file, then waits for
    another to appear."""
    started, go = root / "data" / "pre-started", root / "data" / "pre-go"
    pre = root / "apps" / "pre.py"
    pre.parent.mkdir(parents=True, exist_ok=True)
    pre.write_text(
        f"#!{sys.executable}\n"
        "import os, time\n"
        f"open({str(started)!r}, 'a').write(f'{{time.time()}}\\n')\n"
        "deadline = time.time() + 600\n"
        f"while not os.path.exists({str(go)!r}) and time.time() < deadline:\n"
        "    time.sleep(0.05)\n"
    )
    pre.chmod(0o755)
    exe = root / "apps" / "app.sh"
    exe.write_text("#!/bin/sh\ntrue\n")
    exe.chmod(0o755)
    applications.add_app("waits", SITE, str(exe), preprocess=str(pre))
    return started, go


def starts(path: Path) -> list[float]:
    return [float(line) for line in path.read_text().split()] if path.exists() else []


def one_run(root: Path, broker: str, node: RabbitMQServer | None, extra: str) -> dict[str, float]:
    """Kill the site worker mid-step; seconds until a new worker answers and until the step
    starts again."""
    root.mkdir(parents=True)
    with DevStack.running(root, (SITE,), rabbitmq=node, extra=extra) as stack:
        started, go = waiting_preprocess(root)
        submit_balsam_job({"name": "redelivery", "site": SITE, "application": "waits"})
        wait_for(lambda: len(starts(started)) == 1, 60, "the preprocess step to start")
        stack.workers[SITE].kill(signal.SIGKILL)
        killed = time.time()
        stack.start_worker(SITE, wait=False)
        stack.wait_for_workers([SITE], timeout=120)
        ready = time.time() - killed
        again = wait_for(
            lambda: starts(started)[1:], 300, f"the step to run again on {broker}", 0.05
        )
        go.write_text("")
        return {"ready": ready, "rerun": again[0] - killed}


@contextmanager
def rabbitmq(root: Path) -> Iterator[RabbitMQServer]:
    node = RabbitMQServer(root / "node", BrokerTLS.make(root / "tls"))
    try:
        yield node.start()
    finally:
        node.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    args = parse_args(parser, "the quick settings only")
    kinds = ["quick"] if args.quick else ["shipped", "quick"]
    figures: list[Figure] = []
    details: dict[str, dict[str, float]] = {}
    with (
        tempfile.TemporaryDirectory(prefix="redelivery-") as tmp,
        rabbitmq(Path(tmp) / "rmq") as node,
    ):
        for broker, server in (("redis", None), ("rabbitmq", node)):
            for kind in kinds:
                root = Path(tmp) / f"{broker}-{kind}"
                times = one_run(root, broker, server, SETTINGS[kind])
                details[f"{broker}/{kind}"] = times
                print(f"{broker}, {kind}: {times}", flush=True)
                figures.append(
                    Figure(
                        f"{broker}, {kind} settings: step runs again",
                        times["rerun"],
                        "s",
                        note=f"new worker answered a ping {times['ready']:.1f} s after the kill",
                    )
                )
    record("redelivery", "Redelivery of a step after its worker was SIGKILLed", figures, details)


if __name__ == "__main__":
    main()
