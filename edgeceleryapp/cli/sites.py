"""``edgecelery site``: each site's health, as an operator asks before blaming a job: is a
worker consuming its queue, how many messages wait in it, its jobs per state, its queue limit,
its breaker, its last status query and its last error."""

from __future__ import annotations

from typing import Any

import click

from edgeceleryapp.cli import CONTEXT, emit, handle_errors


def _or_unknown(value: Any) -> str:
    return "unknown (broker unreachable)" if value is None else str(value)


def worker_line(health: dict[str, Any]) -> str:
    worker = health["worker"]
    if worker["last_seen"] is None:
        return "none seen"
    state = "consuming" if worker["alive"] else "not seen lately"
    return f"{state} (last seen {worker['last_seen']} by {worker['seen_by']})"


def admission_line(health: dict[str, Any]) -> str:
    adm = health["admission"]
    limit = "no limit" if adm["limit"] is None else f"limit {adm['limit']}"
    return (
        f"{adm['queued']} queued ({limit}), {adm['running']} running, "
        f"{adm['waiting_for_admission']} waiting for admission"
    )


def pilot_line(p: dict[str, Any] | None) -> str:
    if p is None:
        return "(none)"
    left = p["wall_seconds_left"]
    wall = f"{left // 60} min {left % 60} s left" if left is not None else p["ended"]
    return (
        f"pilot {p['id']:<5} {p['state']:8} batch job {p['batch_job_id'] or '-'}, "
        f"{p['nodes']} nodes x {p['slots_per_node']} slots, "
        f"{p['subjobs_running']} subjobs running, {wall}"
    )


@click.group(context_settings=CONTEXT)
def site() -> None:
    """Sites: whether a worker serves each, and what its jobs wait for."""


@site.command("ls", context_settings=CONTEXT)
@click.option("--json", "as_json", is_flag=True)
@handle_errors
def ls(as_json: bool) -> None:
    """List the configured sites with their worker, queue and jobs."""
    from edgeceleryapp.site_health import all_sites

    sites = all_sites()
    if as_json:
        emit(sites, True)
        return
    rows = [
        {
            "site": h["site"],
            "worker": worker_line(h),
            "messages": _or_unknown(h["messages_waiting"]),
            "jobs": sum(h["jobs"].values()),
            "admission": admission_line(h),
            "breaker": h["breaker"],
        }
        for h in sites
    ]
    emit(rows, False, ("site", "worker", "messages", "jobs", "admission", "breaker"))


@site.command("show", context_settings=CONTEXT)
@click.argument("name")
@click.option("--json", "as_json", is_flag=True)
@handle_errors
def show(name: str, as_json: bool) -> None:
    """Show one site's health in full."""
    from edgeceleryapp.site_health import one_site

    h = one_site(name)
    if as_json:
        emit(h, True)
        return
    query, error = h["last_status_query"], h["last_error"]
    lines = [
        ("site", h["site"]),
        ("queue", h["queue"]),
        ("worker", worker_line(h)),
        ("messages waiting", _or_unknown(h["messages_waiting"])),
        ("admission", admission_line(h)),
        ("breaker", h["breaker"]),
        (
            "last status query",
            "none"
            if query["at"] is None
            else f"{query['at']}, {query['seconds']} s"
            + (f", failed: {query['error']}" if query["error"] else ", ok"),
        ),
        ("last error", "none" if error["at"] is None else f"{error['at']}: {error['message']}"),
    ]
    for label, value in lines:
        click.echo(f"{label:20} {value}")
    click.echo("jobs:")
    for state, count in sorted(h["jobs"].items()) or [("(none)", "")]:
        click.echo(f"  {state:26} {count}")
    if h["pilots"] is not None:
        click.echo("pilots:")
        for p in h["pilots"] or [None]:
            click.echo(f"  {pilot_line(p)}")
