"""``edgecelery worker`` and ``edgecelery db``: running the service."""

from __future__ import annotations

import sys

import click

from edgeceleryapp.cli import CONTEXT, handle_errors


@click.command(context_settings=CONTEXT)
@click.option("--site", default=None, help="Serve queue site.<NAME> (run on that login node).")
@click.option(
    "--argo",
    "is_argo",
    is_flag=True,
    help="Serve queue argo and run celery beat (Argo sweeps, status re-sends); run once.",
)
@click.option("--concurrency", "-c", type=int, default=None)
@click.option("--loglevel", default="INFO", show_default=True)
@click.option("--beat-schedule", default=None, help="Where beat keeps its state file.")
@handle_errors
def worker(
    site: str | None,
    is_argo: bool,
    concurrency: int | None,
    loglevel: str,
    beat_schedule: str | None,
) -> None:
    """Start a Celery worker for one site or for the central Argo service."""
    from edgeceleryapp.errors import ValidationFailed
    from edgeceleryapp.settings import get_settings

    if bool(site) == is_argo:
        raise ValidationFailed([("--site/--argo", "give exactly one")])
    from edgeceleryapp.settings import settings_source

    # First, so that a worker started with the wrong file (or none) says so in its log.
    click.echo(f"edgecelery worker: {settings_source()}", err=True)
    settings = get_settings()
    if site:
        settings.site(site)
    from edgeceleryapp.broker_connection import check
    from edgeceleryapp.db import init_db

    # A broker that cannot be verified stops the worker with the setting to fix (exit 2);
    # otherwise Celery would retry the connection forever, logging a TLS error each time.
    check(settings)
    init_db()
    argv = [
        "worker",
        "--loglevel",
        loglevel,
        "--without-gossip",
        "--without-mingle",
        "-c",
        str(concurrency or settings.worker_concurrency),
    ]
    if site:
        argv += ["-Q", f"site.{site}", "-n", f"{site}@%h"]
    else:
        schedule = beat_schedule or str(settings.argo.staging_dir.parent / "celerybeat-schedule")
        argv += ["-Q", "argo", "-n", "argo@%h", "-B", "--schedule", schedule, "--intake", "--mail"]
    # Celery's command, not app.worker_main: that drops the worker's exit code (1 after an
    # unrecoverable error), and a supervisor that restarts on failure must see the failure.
    from celery.bin.celery import celery as celery_command

    sys.exit(celery_command.main(["-A", "edgeceleryapp", *argv], standalone_mode=False) or 0)


@click.group(context_settings=CONTEXT)
def db() -> None:
    """The job database."""


@db.command("init", context_settings=CONTEXT)
@handle_errors
def init() -> None:
    """Create the tables (idempotent)."""
    from edgeceleryapp.db import init_db
    from edgeceleryapp.settings import get_settings

    init_db()
    from edgeceleryapp.settings import settings_source

    click.echo(f"database ready: {get_settings().database_url} ({settings_source()})")
