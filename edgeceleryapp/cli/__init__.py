"""The ``edgecelery`` command line: the HUST'17 paper's balsam_* and Argo commands, plus workers and
the demo. Every command takes ``-h``; listing commands take ``--json``.

Exit codes: 0 success, 1 operation refused (not found, wrong state), 2 invalid input.
"""

from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from edgeceleryapp.errors import (
    ConfigurationError,
    EdgeCeleryError,
    InvalidState,
    NotFound,
    TransientError,
    ValidationFailed,
)

CONTEXT = {"help_option_names": ["-h", "--help"]}


def handle_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn our error types into a clear message and an exit code, never a traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except ValidationFailed as exc:
            click.echo("invalid:", err=True)
            for field, problem in exc.errors:
                click.echo(f"  {field}: {problem}", err=True)
            sys.exit(2)
        except ConfigurationError as exc:
            click.echo(f"configuration error: {exc}", err=True)
            sys.exit(2)
        except (NotFound, InvalidState, TransientError, EdgeCeleryError) as exc:
            click.echo(f"error: {exc}", err=True)
            if exc.__cause__ is not None and _is_broker_error(exc.__cause__):
                click.echo(f"  broker error: {_broker_source()}", err=True)
            sys.exit(1)
        except Exception as exc:
            if _is_broker_error(exc):
                click.echo(f"broker error: {exc}\n  {_broker_source()}", err=True)
                sys.exit(1)
            # Looked up, not imported: SQLAlchemy is not loaded for `--help`, and an error
            # cannot come from it unless it is.
            db_errors = sys.modules.get("sqlalchemy.exc")
            if db_errors is None or not isinstance(exc, db_errors.DBAPIError):
                raise
            click.echo(
                f"database error: {exc.orig}\n  check database_url in the settings; a new "
                "database gets its tables with `edgecelery db init`",
                err=True,
            )
            sys.exit(1)

    return wrapper


# `argo submit` and `job add`: store a message without starting it.
NO_START = click.option(
    "--no-start",
    is_flag=True,
    help="Store only: nothing starts it, not even the sweep that re-sends lost work.",
)


CREATED_OUTPUT = [
    click.option("--json", "as_json", is_flag=True, help="Print {id, state} as JSON."),
    click.option(
        "--quiet", "-q", is_flag=True, help="Print only the new id (for scripts: ID=$(...))."
    ),
]


def created_output(command: Callable) -> Callable:
    """The output options of the commands that store a new job."""
    for option in reversed(CREATED_OUTPUT):
        command = option(command)
    return command


def report_created(kind: str, job_id: int, started: bool, as_json: bool, quiet: bool) -> None:
    """Say what a submission made: a sentence with the next command to run, the id alone
    (``--quiet``), or JSON."""
    state = "CREATED"
    if as_json:
        emit({"id": job_id, "state": state, "started": started}, True)
    elif quiet:
        click.echo(job_id)
    else:
        group = "argo" if kind == "argo job" else "job"
        how = (
            f"follow it: edgecelery {group} show {job_id}"
            + (" --follow" if group == "argo" else "")
            if started
            else "stored only (--no-start): nothing will start it"
        )
        click.echo(f"{kind} {job_id} submitted; {how}")


def _is_broker_error(exc: BaseException) -> bool:
    """kombu's and redis's connection errors (looked up, not imported: `--help` loads
    neither), and the operating system's."""
    kinds: list[type[BaseException]] = [ConnectionError]
    for module, name in (
        ("kombu.exceptions", "OperationalError"),
        ("redis.exceptions", "ConnectionError"),
    ):
        found = getattr(sys.modules.get(module), name, None)
        if found is not None:
            kinds.append(found)
    return isinstance(exc, tuple(kinds))


def _broker_source() -> str:
    """Which broker was tried and where that came from: the usual fault is the file."""
    from edgeceleryapp.settings import get_settings, settings_source

    return f"broker_url = {get_settings().broker_url} ({settings_source()})"


def check_site(site: str | None) -> None:
    """A filter naming a site the settings do not know is a mistake, not an empty list."""
    if site is None:
        return
    from edgeceleryapp.settings import get_settings, settings_source

    known = get_settings().sites
    if site not in known:
        raise ValidationFailed(
            [
                (
                    "--site",
                    f"no site named {site!r} (known: {', '.join(sorted(known)) or 'none'}; "
                    f"{settings_source()})",
                )
            ]
        )


def read_input(source: str) -> str:
    if source == "-":
        return sys.stdin.read()
    try:
        return Path(source).read_text()
    except OSError as exc:
        raise ValidationFailed([("FILE", f"cannot read {source}: {exc.strerror}")]) from None


def emit(rows: Any, as_json: bool, columns: tuple[str, ...] = ()) -> None:
    if as_json:
        click.echo(json.dumps(rows, indent=2, default=str))
        return
    if not rows:
        click.echo("(none)")
        return
    from edgeceleryapp.local_time import shown_fields

    rows = [shown_fields(r) for r in rows]
    widths = {
        c: max(len(c), *(len(str(r.get(c) if r.get(c) is not None else "")) for r in rows))
        for c in columns
    }
    click.echo("  ".join(c.upper().ljust(widths[c]) for c in columns).rstrip())
    for r in rows:
        click.echo(
            "  ".join(
                str(r.get(c) if r.get(c) is not None else "").ljust(widths[c]) for c in columns
            ).rstrip()
        )


@click.group(context_settings=CONTEXT)
@click.option(
    "--config",
    metavar="FILE",
    help="Settings file (TOML). Default: $EDGECELERY_CONFIG or ./edgecelery.toml.",
)
def main(config: str | None) -> None:
    """edgecelery: run chains of HPC batch jobs across sites (Argo + Balsam on Celery)."""
    if config:
        path = Path(config).resolve()
        if not path.exists():
            raise click.BadParameter(f"settings file {path} does not exist", param_hint="--config")
        os.environ["EDGECELERY_CONFIG"] = str(path)
        from edgeceleryapp.settings import reset_settings

        reset_settings()


from edgeceleryapp.cli import (  # noqa: E402
    apps,
    argo,
    broker,
    demo,
    intake,
    jobs,
    monitor,
    pilot,
    service,
    sites,
    watch,
)

main.add_command(apps.app)
main.add_command(jobs.job)
main.add_command(argo.argo)
main.add_command(argo.retry_alias)
main.add_command(intake.intake)
main.add_command(sites.site)
main.add_command(broker.broker)
main.add_command(service.worker)
main.add_command(service.db)
main.add_command(demo.demo)
main.add_command(monitor.web)
main.add_command(monitor.flower)
main.add_command(watch.watch)
main.add_command(pilot.pilot)
