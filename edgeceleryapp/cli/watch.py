"""``edgecelery watch`` and ``edgecelery argo show --follow``: status messages in a terminal.

Both bind an exclusive, auto-deleted queue to the status exchange (it goes away with the
watcher) and print each message once, deduplicated on ``event_id`` since delivery is at least
once. Following a job also rereads its timeline from the database now and then, so a message
that was never published (the broker was away; the outbox sends it later) is still shown.
"""

from __future__ import annotations

import contextlib
import time
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

import click
from kombu import Connection, Queue

from edgeceleryapp.cli import CONTEXT, handle_errors

RECHECK_SECONDS = 5.0


def format_status(body: dict[str, Any]) -> str:
    """One line per status message: time, which record, the move and its note."""
    if body.get("kind") == "subjob":
        who = f"argo {body['argo_job_id']} subjob {body['subjob_id']} @{body['site']}"
        if body.get("argo_job_id") is None:
            who = f"job {body['subjob_id']} @{body['site']}"
    elif body.get("kind") == "argo":
        who = f"argo {body['argo_job_id']}"
    else:
        who = str(body.get("kind", "?"))
    note = f"  {body['message']}" if body.get("message") else ""
    return (
        f"{body.get('time', '')[:23]}  {who:34} {body.get('from_state') or '-':>24} -> "
        f"{body.get('to_state')}{note}"
    )


def format_event(argo_id: int, event: dict[str, Any]) -> str:
    """The same line for a JobEvent read from the database."""
    return format_status(
        {
            "kind": "subjob" if event["subjob_id"] else "argo",
            "argo_job_id": argo_id,
            "site": event.get("site", "?"),
            **event,
        }
    )


class Seen:
    """Event ids already printed; bounded, since a watch may run for weeks."""

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


@contextlib.contextmanager
def status_stream(routing_key: str, on_body: Callable[[dict[str, Any]], None]) -> Iterator[Any]:
    """A consumer on the status exchange for ``routing_key`` (topic patterns allowed); yields
    a function that waits up to ``timeout`` seconds for messages and handles them."""
    from edgeceleryapp.settings import get_settings
    from edgeceleryapp.status_outbox import status_exchange

    def handle(body: Any, message: Any) -> None:
        message.ack()
        if isinstance(body, dict):
            on_body(body)

    with Connection(get_settings().broker_url) as conn:
        queue = Queue(
            "",
            exchange=status_exchange(),
            routing_key=routing_key,
            exclusive=True,
            auto_delete=True,
        )
        with conn.Consumer(queue, callbacks=[handle], accept=["json"]):

            def drain(timeout: float) -> None:
                with contextlib.suppress(TimeoutError):
                    conn.drain_events(timeout=timeout)

            yield drain


@click.command(context_settings=CONTEXT)
@click.option(
    "--routing-key",
    default="#",
    show_default=True,
    help="Status routing key to bind (topic patterns: '#' is every message).",
)
@click.option("--job", "argo_id", type=int, default=None, help="Only this Argo job's messages.")
@handle_errors
def watch(routing_key: str, argo_id: int | None) -> None:
    """Print status messages as they arrive, until interrupted."""
    seen = Seen()

    def on_body(body: dict[str, Any]) -> None:
        if argo_id is not None and body.get("argo_job_id") != argo_id:
            return
        if seen.add(body.get("event_id")):
            click.echo(format_status(body))

    with status_stream(routing_key, on_body) as drain:
        click.echo(f"watching status messages on {routing_key!r}", err=True)
        with contextlib.suppress(KeyboardInterrupt):
            while True:
                drain(1.0)


def follow(argo_id: int) -> str:
    """Print an Argo job's timeline, then each change as it happens, until the job stops;
    returns the state it stopped in."""
    from edgeceleryapp import job_views, states
    from edgeceleryapp.status_outbox import routing_key_for

    first = job_views.show_argo(argo_id)
    key = first["job_status_routing_key"] or routing_key_for(None)
    seen = Seen()
    stopped: dict[str, str] = {}

    def on_body(body: dict[str, Any]) -> None:
        if body.get("argo_job_id") != argo_id or not seen.add(body.get("event_id")):
            return
        click.echo(format_status(body))
        if body.get("kind") == "argo" and states.has_stopped(states.ARGO, body["to_state"]):
            stopped["state"] = body["to_state"]

    def from_database() -> None:
        """Print what the database holds that no message brought; note if the job stopped."""
        job = job_views.show_argo(argo_id)
        sites = {sj["id"]: sj["site"] for sj in job["subjobs"]}
        for event in job["events"]:
            if seen.add(event["id"]):
                click.echo(format_event(argo_id, {**event, "site": sites.get(event["subjob_id"])}))
        if states.has_stopped(states.ARGO, job["state"]):
            stopped["state"] = job["state"]

    # Bound before the first read: nothing can happen between the read and the binding.
    with status_stream(key, on_body) as drain:
        from_database()
        last_check = time.monotonic()
        while "state" not in stopped:
            drain(1.0)
            if time.monotonic() - last_check >= RECHECK_SECONDS:
                from_database()
                last_check = time.monotonic()
    return stopped["state"]
