"""``edgecelery argo``: Argo jobs (section 2.2 of the HUST'17 paper), and ``edgecelery retry``
(kept as a short form of ``argo retry`` and ``job retry``)."""

from __future__ import annotations

import sys
from typing import Any

import click

from edgeceleryapp.cli import (
    CONTEXT,
    NO_START,
    created_output,
    emit,
    handle_errors,
    read_input,
    report_created,
)

COLUMNS = ("id", "updated_at", "group_identifier", "site", "state", "output_url", "name")


def print_events(events: list[dict[str, Any]]) -> None:
    """The timeline, times local; a time the poller noticed late is marked as a bound."""
    from edgeceleryapp.local_time import event_time

    click.echo("timeline:")
    times = [event_time(e) for e in events]
    width = max(map(len, times), default=0)
    for e, when in zip(events, times, strict=True):
        who = f"subjob {e['subjob_id']}" if e["subjob_id"] else "argo"
        line = f"  {when:{width}}  {who:10}  {e['from_state'] or '-':>24} -> {e['to_state']}"
        click.echo(line + (f"  ({e['message']})" if e["message"] else ""))


def print_fields(data: dict[str, Any], skip: tuple[str, ...], width: int) -> None:
    """A record's fields, one a line, times local."""
    from edgeceleryapp.local_time import shown_fields

    for key, value in shown_fields(data).items():
        if key not in skip:
            click.echo(f"{key:{width}} {value if value is not None else ''}")


@click.group(context_settings=CONTEXT)
def argo() -> None:
    """Argo jobs: ordered chains of subjobs across sites."""


@argo.command("validate", context_settings=CONTEXT)
@click.argument("source", metavar="FILE|-")
@click.option(
    "--schema-only",
    is_flag=True,
    help="Check the fields only, not the sites' settings or the registered applications.",
)
@handle_errors
def validate(source: str, schema_only: bool) -> None:
    """Check an Argo job message; exit 0 if valid, 2 with every field error if not.

    By default it also checks that every subjob's site is configured here and, when the
    database can be reached, that its application is registered at that site, so exit 0
    means the job can run.
    """
    from workflows.intake import checked_argo
    from workflows.validation import parse_json, validate_argo

    data = parse_json(read_input(source))
    message = validate_argo(data) if schema_only else checked_argo(data)
    if not schema_only:
        check_registered(message.subjobs)
    click.echo(f"valid: argo job {message.name!r} with {len(message.subjobs)} subjob(s)")


def check_registered(subjobs: list[Any]) -> None:
    """Each subjob's application registered at its site, when the database can be asked;
    else a note that it was not checked (validating on a machine without the database)."""
    import sqlalchemy.exc

    from edgeceleryapp.applications import registered
    from edgeceleryapp.errors import ValidationFailed

    candidates = [sj.sites or [sj.site] for sj in subjobs]
    try:
        known = registered({site for sites in candidates for site in sites})
    except sqlalchemy.exc.SQLAlchemyError as exc:
        reason = getattr(exc, "orig", None) or exc
        click.echo(
            f"note: the database cannot be asked ({reason}); applications not checked", err=True
        )
        return
    errors = [
        (
            f"subjobs[{i}].application",
            f"{sj.application!r} is not registered at site {sj.site!r} (registered there: "
            f"{', '.join(sorted(known[sj.site])) or 'none'}; see `edgecelery app add`)"
            if len(sites) == 1
            else f"{sj.application!r} is not registered at any of its sites "
            f"({', '.join(sites)}; see `edgecelery app add`)",
        )
        for i, (sj, sites) in enumerate(zip(subjobs, candidates, strict=True))
        if all(sj.application not in known[site] for site in sites)
    ]
    if errors:
        raise ValidationFailed(errors)


@argo.command("submit", context_settings=CONTEXT)
@click.argument("source", metavar="FILE|-")
@NO_START
@created_output
@handle_errors
def submit(source: str, no_start: bool, as_json: bool, quiet: bool) -> None:
    """Validate, store and start an Argo job; says its id (``-q``: the id alone)."""
    from workflows.intake import submit_argo

    argo_id = submit_argo(read_input(source), start=not no_start)
    report_created("argo job", argo_id, not no_start, as_json, quiet)


@argo.command("ls", context_settings=CONTEXT)
@click.option("--state", default=None, help="A state, or 'failed' for any failure state.")
@click.option("--site", default=None, help="Argo jobs with a subjob at this site.")
@click.option("--group", default=None, help="Argo jobs whose group_identifier starts so.")
@click.option("--limit", default=100, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@handle_errors
def ls(state: str | None, site: str | None, group: str | None, limit: int, as_json: bool) -> None:
    """List Argo jobs, newest first."""
    from edgeceleryapp import job_views
    from edgeceleryapp.cli import check_site

    check_site(site)

    emit(job_views.list_argo(state, site, group, limit), as_json, COLUMNS)


@argo.command("show", context_settings=CONTEXT)
@click.argument("argo_id", type=int)
@click.option("--json", "as_json", is_flag=True)
@click.option(
    "--follow",
    is_flag=True,
    help="Print each change as it happens until the job stops; exit 0 at HISTORY, else 1.",
)
@handle_errors
def show(argo_id: int, as_json: bool, follow: bool) -> None:
    """Show an Argo job, its subjobs and the timeline of every state change."""
    from edgeceleryapp import job_views

    if follow:
        from edgeceleryapp.cli.watch import follow as follow_job

        state = follow_job(argo_id)
        click.echo(f"argo job {argo_id} stopped in {state}")
        sys.exit(0 if state == "HISTORY" else 1)
    data = job_views.show_argo(argo_id)
    if as_json:
        emit(data, True)
        return
    print_fields(data, ("subjobs", "events", "waiting"), 24)
    if data["waiting"]:
        click.echo(f"{'waiting':24} {describe_wait(data['waiting'])}")
    click.echo("subjobs:")
    for sj in data["subjobs"]:
        click.echo(
            f"  [{sj['position']}] "
            + (f"{sj['name']} " if "parents" in sj else "")
            + f"id={sj['id']} site={sj['site']} "
            f"application={sj['application']} state={sj['state']} "
            f"batch_job={sj['batch_job_id'] or '-'}"
            + (f" parents={','.join(sj['parents']) or '-'}" if "parents" in sj else "")
            + (f" ({sj['state_message']})" if sj["state_message"] else "")
        )
        if sj["waiting"]:
            click.echo(f"      waiting: {describe_wait(sj['waiting'])}")
        if sj["state"] == "EXECUTION_FINISHED_FAILED":
            click.echo(f"      what it wrote: edgecelery job logs {sj['id']} --stderr")
    print_events(data["events"])


def describe_wait(wait: dict[str, Any]) -> str:
    """One line of why a record waits (``job_views.waiting``): the sentence, then the
    details it was computed from (times in the local zone)."""
    from edgeceleryapp.local_time import shown_fields

    shown = shown_fields(wait)
    details = ", ".join(
        f"{k.replace('_', ' ')} {v}" for k, v in shown.items() if k not in ("for", "why")
    )
    return wait["why"] + (f" (for {wait['for']}" + (f"; {details})" if details else ")"))


@argo.command("cancel", context_settings=CONTEXT)
@click.argument("argo_id", type=int)
@handle_errors
def cancel(argo_id: int) -> None:
    """Cancel an Argo job: batch jobs are removed, the job and its subjobs end KILLED."""
    from edgeceleryapp import job_control

    n = job_control.cancel_argo(argo_id)
    click.echo(f"argo job {argo_id} KILLED; {n} batch job(s) being cancelled")


@argo.command("rm", context_settings=CONTEXT)
@click.argument("argo_id", type=int)
@click.option("--force", is_flag=True, help="Remove even with a batch job in flight.")
@handle_errors
def rm(argo_id: int, force: bool) -> None:
    """Remove an Argo job, its subjobs and its events."""
    from edgeceleryapp import job_control

    job_control.remove_argo(argo_id, force)
    click.echo(f"argo job {argo_id} removed")


@argo.command("retry", context_settings=CONTEXT)
@click.argument("argo_id", type=int)
@click.option("--json", "as_json", is_flag=True)
@handle_errors
def retry(argo_id: int, as_json: bool) -> None:
    """Run a failed Argo job again from its failed step."""
    from edgeceleryapp import job_control

    report_retry("argo job", argo_id, job_control.retry_argo(argo_id), as_json)


def report_retry(kind: str, job_id: int, state: str, as_json: bool) -> None:
    if as_json:
        emit({"id": job_id, "state": state}, True)
    else:
        click.echo(f"{kind} {job_id} restarted; it is now {state}")


@click.command("retry", context_settings=CONTEXT)
@click.argument("job_id", type=int)
@click.option("--subjob", is_flag=True, help="JOB_ID is a Balsam-only job, not an Argo job.")
@click.option("--json", "as_json", is_flag=True)
@handle_errors
def retry_alias(job_id: int, subjob: bool, as_json: bool) -> None:
    """Run a failed job again from its failed step (`argo retry ID`, `job retry ID`)."""
    from edgeceleryapp import job_control

    if subjob:
        report_retry("job", job_id, job_control.retry_subjob(job_id), as_json)
    else:
        report_retry("argo job", job_id, job_control.retry_argo(job_id), as_json)
