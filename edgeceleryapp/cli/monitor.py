"""``edgecelery web`` (the job browser) and ``edgecelery flower`` (the task dashboard).

Both refuse to start without credentials: the browser changes and deletes jobs, and Flower can
revoke tasks and shut workers down. ``--insecure`` lets Flower run open, for a machine where
only you can reach the port.
"""

from __future__ import annotations

import asyncio
import contextlib

import click

from edgeceleryapp.cli import CONTEXT, handle_errors


@click.group(context_settings=CONTEXT, invoke_without_command=True)
@click.option("--host", default=None, help="Address to bind (default: web.host).")
@click.option("--port", type=int, default=None, help="Port (default: web.port; 0: any free).")
@click.pass_context
@handle_errors
def web(ctx: click.Context, host: str | None, port: int | None) -> None:
    """Serve the job browser (Figures 5 and 6 of the HUST'17 paper) and its JSON API."""
    if ctx.invoked_subcommand is not None:
        return
    from edgeceleryapp.db import init_db
    from edgeceleryapp.settings import get_settings
    from edgeceleryapp.web.app import check, serve

    settings = get_settings()
    check(settings.web)
    init_db()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(
            serve(settings, host or settings.web.host, settings.web.port if port is None else port)
        )


@web.command("hash-password", context_settings=CONTEXT)
@click.password_option(help="The password (asked for when not given).")
def hash_password_cmd(password: str) -> None:
    """Print the hash of a password, for [web.users] in the settings."""
    from edgeceleryapp.web.auth import hash_password

    click.echo(hash_password(password))


@web.command("passwd", context_settings=CONTEXT)
@click.argument("user")
@click.password_option(help="The new password (asked for, twice, when not given).")
@handle_errors
def passwd(user: str, password: str) -> None:
    """Set USER's password in the settings file and end all of USER's sessions.

    A running `edgecelery web` reads the file again on its next request: the old password no
    longer logs in, the new one does, and no session opened before goes on working.
    """
    from edgeceleryapp.errors import ConfigurationError
    from edgeceleryapp.settings import config_path
    from edgeceleryapp.web.accounts import set_password
    from edgeceleryapp.web.auth import hash_password
    from edgeceleryapp.web.sessions import end_sessions

    path = config_path()
    if path is None:
        raise ConfigurationError("no settings file: pass --config or set EDGECELERY_CONFIG")
    hashed = hash_password(password)
    try:
        set_password(path, user, hashed)
    except ConfigurationError as exc:
        raise ConfigurationError(f'{exc}; set it by hand: {user} = "{hashed}"') from None
    ended = end_sessions(user)
    click.echo(f"password of {user} set in {path}; {ended} session(s) ended")


@web.command("logout", context_settings=CONTEXT)
@click.argument("users", nargs=-1, required=True)
@handle_errors
def logout(users: tuple[str, ...]) -> None:
    """End every job-browser session of USERS (a lost laptop, a leaked cookie)."""
    from edgeceleryapp.web.sessions import end_sessions

    for user in users:
        click.echo(f"{user}: {end_sessions(user)} session(s) ended")


def flower_argv(host: str, port: int, insecure: bool) -> list[str]:
    """Flower's arguments from the settings: authentication, persistent state, a bounded
    task history."""
    from edgeceleryapp.errors import ConfigurationError
    from edgeceleryapp.settings import get_settings

    everything = get_settings()
    settings = everything.flower
    if not settings.basic_auth and not insecure:
        raise ConfigurationError(
            "flower.basic_auth: no credentials; set them, or pass --insecure to run it open"
        )
    settings.db.parent.mkdir(parents=True, exist_ok=True)
    argv = [
        "flower",
        f"--address={host}",
        f"--port={port}",
        "--persistent=True",
        f"--db={settings.db}",
        f"--max_tasks={settings.max_tasks}",
    ]
    if settings.url_prefix:
        argv.append(f"--url_prefix={settings.url_prefix}")
    if settings.basic_auth:
        argv.append(f"--basic-auth={','.join(settings.basic_auth)}")
    if everything.broker.management_url:
        # RabbitMQ: the Broker page reads queue lengths from the management API.
        argv.append(f"--broker_api={everything.broker.management_url}")
    return argv


@click.command(context_settings=CONTEXT)
@click.option("--host", default=None, help="Address to bind (default: flower.host).")
@click.option("--port", type=int, default=None, help="Port (default: flower.port).")
@click.option("--insecure", is_flag=True, help="Run without authentication.")
@handle_errors
def flower(host: str | None, port: int | None, insecure: bool) -> None:
    """Start Flower, the live task and worker dashboard, on the configured broker.

    Prometheus scrapes its /metrics (which Flower serves without authentication).
    """
    from edgeceleryapp.broker_connection import check
    from edgeceleryapp.celery import app
    from edgeceleryapp.settings import get_settings

    check()
    settings = get_settings().flower
    argv = flower_argv(host or settings.host, settings.port if port is None else port, insecure)
    # In this process, so the credentials never appear on a command line others can read.
    app.start(argv)
