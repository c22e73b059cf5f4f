"""``edgecelery broker``: what the broker must be told, for an operator to run there."""

from __future__ import annotations

import click

from edgeceleryapp.cli import CONTEXT, handle_errors


@click.group(context_settings=CONTEXT)
def broker() -> None:
    """The message broker (RabbitMQ): users and their permissions."""


@broker.command("site-user", context_settings=CONTEXT)
@click.argument("site")
@click.option(
    "--user",
    default=None,
    help="The common name of the site worker's client certificate. Default: the site's name.",
)
@click.option("--vhost", default="/", show_default=True, help="RabbitMQ virtual host.")
@handle_errors
def site_user(site: str, user: str | None, vhost: str) -> None:
    """Print the rabbitmqctl commands that give SITE's worker a certificate login of its own
    that may use only its queue, publish what a site worker sends (tasks to the argo queue,
    status messages, events, inspect replies), and nothing else: not another site's queue,
    not the argo or intake queue. Run them on the broker's host."""
    from edgeceleryapp.broker_permissions import rabbitmqctl_commands, site_permissions
    from edgeceleryapp.settings import get_settings

    get_settings().site(site)
    for line in rabbitmqctl_commands(user or site, site_permissions(site), vhost):
        click.echo(line)
