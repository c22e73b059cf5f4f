"""``edgecelery watch`` and ``edgecelery argo show --follow``: status messages in a terminal.

Both listen through ``edgeceleryapp.status_stream`` (an exclusive queue that goes away with the
watcher) and print each message once, deduplicated on ``event_id`` since delivery is at least
once. Following a job also rereads its timeline from the database now and then, so a message
that was never published (the broker was away; the outbox sends it later) is still shown, and
says why the job waits whenever that changes, so a job that waits is never followed in silence.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

import click

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
    # Imported here, not at the top: kombu and the settings are not loaded for `--help`.
    from edgeceleryapp.settings import get_settings
    from edgeceleryapp.status_stream import Seen, StatusStream

    def on_body(body: dict[str, Any]) -> None:
        if argo_id is None or body.get("argo_job_id") == argo_id:
            click.echo(format_status(body))

    with StatusStream(get_settings().broker_url, routing_key, on_body, seen=Seen()) as stream:
        click.echo(f"watching status messages on {routing_key!r}", err=True)
        with contextlib.suppress(KeyboardInterrupt):
            while True:
                stream.drain(1.0)


def follow(argo_id: int) -> str:
    """Print an Argo job's timeline, then each change as it happens, until the job stops;
    returns the state it stopped in."""
    from edgeceleryapp import job_views, states
    from edgeceleryapp.models import utcnow
    from edgeceleryapp.settings import get_settings
    from edgeceleryapp.status_outbox import routing_key_for
    from edgeceleryapp.status_stream import Seen, StatusStream

    first = job_views.show_argo(argo_id)
    key = first["job_status_routing_key"] or routing_key_for(None)
    seen = Seen()
    stopped: dict[str, str] = {}

    def on_body(body: dict[str, Any]) -> None:
        if body.get("argo_job_id") != argo_id:
            return
        click.echo(format_status(body))
        if body.get("kind") == "argo" and states.has_stopped(states.ARGO, body["to_state"]):
            stopped["state"] = body["to_state"]

    said: dict[str, str] = {}

    def from_database() -> None:
        """Print what the database holds that no message brought, and why the job waits when
        that changed (a wait no message announces: no worker for its site); note if the job
        stopped."""
        job = job_views.show_argo(argo_id)
        sites = {sj["id"]: sj["site"] for sj in job["subjobs"]}
        for event in job["events"]:
            if seen.add(event["id"]):
                click.echo(format_event(argo_id, {**event, "site": sites.get(event["subjob_id"])}))
        if states.has_stopped(states.ARGO, job["state"]):
            stopped["state"] = job["state"]
            return
        why = job["waiting"]["why"] if job["waiting"] else ""
        if why and why != said.get("why"):
            now = utcnow().isoformat(timespec="milliseconds")[:23]
            click.echo(f"{now}  {'argo ' + str(argo_id):34} waiting: {why}")
        said["why"] = why

    # Bound before the first read: nothing can happen between the read and the binding.
    with StatusStream(get_settings().broker_url, key, on_body, seen=seen) as stream:
        from_database()
        last_check = time.monotonic()
        while "state" not in stopped:
            stream.drain(1.0)
            if time.monotonic() - last_check >= RECHECK_SECONDS:
                from_database()
                last_check = time.monotonic()
    return stopped["state"]
