"""Who may do what on a RabbitMQ broker: the central service's user may do anything on its
virtual host; each site's user (its client certificate's common name) only what a site
worker must, so that a compromised site cannot read another site's tasks, take the Argo
service's, or put a job on the intake queue.

RabbitMQ grants per user three regular expressions over queue and exchange names:
*configure* (declare, delete), *write* (publish to an exchange, bind a queue) and *read*
(consume from a queue, bind to an exchange). A site worker:

- declares, binds and consumes its own queue ``site.<name>`` (and its exchange of that name),
  and its remote-control queue ``<name>@<host>.celery.pidbox`` bound to ``celery.pidbox``;
- publishes tasks to its own queue (the next step of a chain), ``argo.advance`` to the
  ``argo`` exchange, status messages to the status exchange, events to ``celeryev`` and
  answers to ``celery inspect`` to ``reply.celery.pidbox`` (those three Celery declares
  before each use, so they need configure too).

Celery sends a task to a direct queue through the default exchange (routing key = queue name),
and write on the default exchange (``amq.default``) is write on every queue, the intake queue
too; so on RabbitMQ our tasks name their queue's own exchange (``route``).

Celery declares a task's queue before it publishes it (configure on ``argo`` would let a
site delete the Argo queue) and declaring a queue binds it (read on the ``argo`` exchange);
so a site worker on RabbitMQ leaves ``argo`` and the status exchange undeclared
(``SiteLeavesSharedUndeclared``) and the central service declares them when it starts (the
argo worker consumes ``argo``; ``status_outbox.CentralDeclaresStatusExchange``).
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from typing import Any

from celery import bootsteps

from edgeceleryapp.broker_connection import scheme_of
from edgeceleryapp.settings import Settings, get_settings

ARGO_QUEUE = "argo"
SITE_QUEUE_PREFIX = "site."
# Celery's remote control (kombu's pidbox, namespace "celery") and its event exchange.
PIDBOX_EXCHANGE = "celery.pidbox"
PIDBOX_REPLY_EXCHANGE = "reply.celery.pidbox"
EVENT_EXCHANGE = "celeryev"

# Whether this process declares the queues and exchanges shared by every site; a site
# worker on RabbitMQ does not (it may not: see the module's docstring).
_declares_shared = True


@dataclass(frozen=True)
class Permissions:
    """One user's ``rabbitmqctl set_permissions`` patterns on a virtual host."""

    configure: str
    write: str
    read: str


CENTRAL = Permissions(".*", ".*", ".*")


def _names(*names: str) -> str:
    return "^(" + "|".join(names) + ")$"


def site_permissions(site: str, settings: Settings | None = None) -> Permissions:
    """What the broker user of ``site``'s worker may touch: nothing of another site's, the
    Argo queue only by publishing to its exchange, the intake queue not at all."""
    settings = settings or get_settings()
    own_queue = re.escape(SITE_QUEUE_PREFIX + site)
    pidbox_queue = re.escape(site + "@") + r"[^@]*\." + re.escape(PIDBOX_EXCHANGE)
    celery_declared = (re.escape(EVENT_EXCHANGE), re.escape(PIDBOX_REPLY_EXCHANGE))
    return Permissions(
        configure=_names(own_queue, pidbox_queue, re.escape(PIDBOX_EXCHANGE), *celery_declared),
        write=_names(
            own_queue,
            pidbox_queue,
            re.escape(ARGO_QUEUE),
            re.escape(settings.status_exchange),
            *celery_declared,
        ),
        read=_names(own_queue, pidbox_queue, re.escape(PIDBOX_EXCHANGE)),
    )


def rabbitmqctl_commands(user: str, permissions: Permissions, vhost: str = "/") -> list[str]:
    """The commands that make ``user`` a certificate-only login with ``permissions``."""
    q = shlex.quote
    return [
        f'rabbitmqctl add_user {q(user)} "$(openssl rand -hex 16)"',
        f"rabbitmqctl clear_password {q(user)}",
        f"rabbitmqctl set_permissions -p {q(vhost)} {q(user)} "
        f"{q(permissions.configure)} {q(permissions.write)} {q(permissions.read)}",
    ]


AMQP_SCHEMES = ("amqp", "amqps", "pyamqp")


def route(queue: str, settings: Settings | None = None) -> dict[str, str]:
    """A task's routing options: on RabbitMQ through the exchange named after ``queue`` (each
    queue Celery declares is bound to it), never the default exchange."""
    settings = settings or get_settings()
    if scheme_of(settings.broker_url) in AMQP_SCHEMES:
        return {"queue": queue, "exchange": queue, "routing_key": queue}
    return {"queue": queue}


def declares_shared() -> bool:
    return _declares_shared


def _is_amqp(app: Any) -> bool:
    return app.connection_for_write().transport.driver_type == "amqp"


def _consumes_only_sites(queue_names: Any) -> bool:
    names = list(queue_names)
    return bool(names) and all(name.startswith(SITE_QUEUE_PREFIX) for name in names)


class SiteLeavesSharedUndeclared(bootsteps.Step):
    """In a worker that consumes only site queues, on RabbitMQ: never declare the ``argo``
    queue (tasks are still published to its exchange) nor the status exchange. Runs as the
    worker is built, before its pool forks, so every process of the worker holds to it."""

    label = "SiteLeavesSharedUndeclared"

    def __init__(self, w: Any, **kwargs: Any) -> None:
        global _declares_shared
        super().__init__(w, **kwargs)
        queues = w.app.amqp.queues
        if _consumes_only_sites(queues.consume_from) and _is_amqp(w.app):
            queues[ARGO_QUEUE].no_declare = True
            _declares_shared = False
