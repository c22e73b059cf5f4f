"""``edgecelery job``: Balsam jobs (the HUST'17 paper's balsam_add_job, _ls_jobs, _rm_jobs,
_alter_job, _rm_all_jobs), and the batch output of any job."""

from __future__ import annotations

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

NUMBERS = ("wall_time_minutes", "num_nodes", "processes_per_node")
COLUMNS = ("id", "argo_job_id", "site", "application", "state", "attempt", "batch_job_id", "name")
FOLLOW_INTERVAL = 1.0  # seconds between reads of a growing batch output with --follow


@click.group(context_settings=CONTEXT)
def job() -> None:
    """Balsam jobs: one application run at one site."""


@job.command("add", context_settings=CONTEXT)
@click.argument("source", metavar="FILE|-")
@NO_START
@created_output
@handle_errors
def add(source: str, no_start: bool, as_json: bool, quiet: bool) -> None:
    """Add a Balsam job from a JSON message (the HUST'17 paper, 2.1.1) and start it; says its
    id (``-q``: the id alone)."""
    from workflows.intake import submit_balsam

    job_id = submit_balsam(read_input(source), start=not no_start)
    report_created("job", job_id, not no_start, as_json, quiet)


@job.command("ls", context_settings=CONTEXT)
@click.option("--site", default=None)
@click.option("--state", default=None, help="A state, or 'failed' for any failure state.")
@click.option("--limit", default=100, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@handle_errors
def ls(site: str | None, state: str | None, limit: int, as_json: bool) -> None:
    """List jobs (subjobs of Argo jobs included), newest first."""
    from edgeceleryapp import job_views
    from edgeceleryapp.cli import check_site

    check_site(site)

    emit(job_views.list_subjobs(site, state, limit), as_json, COLUMNS)


@job.command("show", context_settings=CONTEXT)
@click.argument("job_id", type=int)
@click.option("--json", "as_json", is_flag=True)
@handle_errors
def show(job_id: int, as_json: bool) -> None:
    """Show one job and its state timeline."""
    from edgeceleryapp import job_views
    from edgeceleryapp.cli.argo import describe_wait, print_events, print_fields

    data = job_views.show_subjob(job_id)
    if as_json:
        emit(data, True)
        return
    print_fields(data, ("events", "waiting"), 20)
    if data.get("pilot_id") is not None:
        from edgeceleryapp import pilot_views
        from edgeceleryapp.db import read_scope

        with read_scope() as s:
            click.echo(f"{'ran in':20} {pilot_views.describe(s, data['pilot_id'])}")
    if data["waiting"]:
        click.echo(f"{'waiting':20} {describe_wait(data['waiting'])}")
    click.echo(f"{'batch output':20} edgecelery job logs {job_id} [--stderr] [--attempt N]")
    print_events(data["events"])


@job.command("rm", context_settings=CONTEXT)
@click.argument("job_ids", type=int, nargs=-1, required=True)
@click.option("--force", is_flag=True, help="Remove even with a batch job in flight.")
@handle_errors
def rm(job_ids: tuple[int, ...], force: bool) -> None:
    """Remove Balsam-only jobs."""
    from edgeceleryapp import job_control

    click.echo(f"removed {job_control.remove_subjobs(list(job_ids), force)}")


@job.command("rm-all", context_settings=CONTEXT)
@click.option("--yes", is_flag=True, help="Confirm.")
@click.option("--force", is_flag=True, help="Remove even with batch jobs in flight.")
@handle_errors
def rm_all(yes: bool, force: bool) -> None:
    """Remove every Balsam-only job."""
    from edgeceleryapp import job_control

    if not yes:
        click.confirm("Remove every Balsam-only job?", abort=True)
    click.echo(f"removed {job_control.remove_all_subjobs(force)}")


@job.command("alter", context_settings=CONTEXT)
@click.argument("job_id", type=int)
@click.option(
    "--set",
    "pairs",
    multiple=True,
    metavar="FIELD=VALUE",
    required=True,
    help="A field to change (repeatable); an empty VALUE clears an optional field.",
)
@handle_errors
def alter(job_id: int, pairs: tuple[str, ...]) -> None:
    """Change fields of a job that has not started (or has failed)."""
    from edgeceleryapp import job_control
    from edgeceleryapp.errors import ValidationFailed

    changes: dict[str, object] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise ValidationFailed([(pair, "expected FIELD=VALUE")])
        if key in NUMBERS:
            try:
                changes[key] = int(value)
            except ValueError:
                raise ValidationFailed([(key, f"{value!r} is not a whole number")]) from None
        else:
            changes[key] = value or None
    job_control.alter_subjob(job_id, changes)
    click.echo(f"job {job_id} changed: {', '.join(sorted(changes))}")


@job.command("kill", context_settings=CONTEXT)
@click.argument("job_id", type=int)
@handle_errors
def kill(job_id: int) -> None:
    """Kill a job: its batch job is cancelled and it ends KILLED (its Argo job too)."""
    from edgeceleryapp import job_control

    n = job_control.kill_subjob(job_id)
    click.echo(f"job {job_id} KILLED; {n} batch job(s) being cancelled")


@job.command("retry", context_settings=CONTEXT)
@click.argument("job_id", type=int)
@click.option("--json", "as_json", is_flag=True)
@handle_errors
def retry(job_id: int, as_json: bool) -> None:
    """Run a failed Balsam-only job again from its failed step."""
    from edgeceleryapp import job_control
    from edgeceleryapp.cli.argo import report_retry

    report_retry("job", job_id, job_control.retry_subjob(job_id), as_json)


@job.command("logs", context_settings=CONTEXT)
@click.argument("job_id", type=int)
@click.option(
    "--attempt",
    type=int,
    default=None,
    help="Which attempt (1 for the first); default: the latest that wrote its output.",
)
@click.option("--stderr", is_flag=True, help="Standard error instead of standard output.")
@click.option(
    "--follow", is_flag=True, help="Keep printing what the batch job writes until it ends."
)
@handle_errors
def logs(job_id: int, attempt: int | None, stderr: bool, follow: bool) -> None:
    """Print what a job's batch job wrote (a subjob of an Argo job, or a Balsam job).

    Each attempt (a resubmission, a retry) keeps its own files in the job's work directory at
    its site; `job show` names the directory. They are read where they lie, over SSH for a
    site reached that way.
    """
    import time

    from edgeceleryapp import batch_logs
    from edgeceleryapp.errors import NotFound

    log = batch_logs.locate(job_id, attempt, "err" if stderr else "out")
    offset = 0
    while True:
        # Where the job stands is read before the file: once it has ended, this read is the
        # last, and nothing written before the end is missed.
        log = batch_logs.locate(job_id, log.attempt, log.stream)
        data = batch_logs.read(log, offset)
        if data:
            click.echo(data, nl=False)
            offset += len(data)
        if not (follow and log.still_writing):
            break
        time.sleep(FOLLOW_INTERVAL)
    if data is None and offset == 0:
        raise NotFound(batch_logs.absent(log))
