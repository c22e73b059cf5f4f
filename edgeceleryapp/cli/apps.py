"""``edgecelery app``: the application whitelist (the paper's balsam_*_app commands)."""

from __future__ import annotations

import click

from edgeceleryapp.cli import CONTEXT, emit, handle_errors

PATH_OPTIONS = [
    click.option("--description", default=None, help="Human readable text."),
    click.option(
        "--config-script",
        default=None,
        help="Absolute path: turns the job's config_file into a JSON argument list.",
    ),
    click.option("--preprocess", default=None, help="Absolute path: run before submission."),
    click.option("--postprocess", default=None, help="Absolute path: run after the batch job."),
]


def with_paths(fn):  # type: ignore[no-untyped-def]
    for option in reversed(PATH_OPTIONS):
        fn = option(fn)
    return fn


@click.group(context_settings=CONTEXT)
def app() -> None:
    """Register, list, change and remove applications a site may run."""


@app.command("add", context_settings=CONTEXT)
@click.argument("name", required=False)
# The name was an option before it became an argument, as in `app rm NAME`; still accepted.
@click.option("--name", "name_option", default=None, hidden=True)
@click.option("--site", required=True, help="The site this application is registered for.")
@click.option(
    "--executable",
    required=True,
    help="Absolute path of the program (checked now when the site runs commands locally).",
)
@with_paths
@click.option("--json", "as_json", is_flag=True)
@handle_errors
def add(
    name: str | None,
    name_option: str | None,
    site: str,
    executable: str,
    as_json: bool,
    **fields: str | None,
) -> None:
    """Add application NAME to a site's whitelist."""
    from edgeceleryapp import applications
    from edgeceleryapp.errors import ValidationFailed

    if bool(name) == bool(name_option):
        raise ValidationFailed([("NAME", "give the application's name once, as an argument")])
    name = name or name_option
    assert name is not None
    app_id = applications.add_app(
        name, site, executable, **{k: v for k, v in fields.items() if v is not None}
    )
    if as_json:
        emit({"id": app_id, "name": name, "site": site, "executable": executable}, True)
    else:
        click.echo(f"application {name!r} registered at site {site!r} (id {app_id})")


@app.command("ls", context_settings=CONTEXT)
@click.option("--site", default=None)
@click.option("--json", "as_json", is_flag=True)
@handle_errors
def ls(site: str | None, as_json: bool) -> None:
    """List registered applications."""
    from edgeceleryapp import applications
    from edgeceleryapp.cli import check_site

    check_site(site)

    emit(applications.list_apps(site), as_json, ("id", "site", "name", "executable"))


@app.command("rm", context_settings=CONTEXT)
@click.argument("name")
@click.option("--site", required=True)
@handle_errors
def rm(name: str, site: str) -> None:
    """Remove an application from a site's whitelist."""
    from edgeceleryapp import applications

    applications.remove_app(name, site)
    click.echo(f"application {name!r} removed from site {site!r}")


@app.command("alter", context_settings=CONTEXT)
@click.argument("name")
@click.option("--site", required=True)
@click.option("--executable", default=None)
@with_paths
@handle_errors
def alter(name: str, site: str, **fields: str | None) -> None:
    """Change an application's fields (give "" to clear a script)."""
    from edgeceleryapp import applications

    applications.alter_app(name, site, **fields)
    click.echo(f"application {name!r} at site {site!r} changed")
