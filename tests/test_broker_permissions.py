"""The site user's permission patterns (edgeceleryapp/broker_permissions.py) name exactly the
queues and exchanges a site worker needs, and tasks on RabbitMQ never use the default
exchange. RabbitMQ matches these patterns with Erlang's re (PCRE); for these patterns Python's
re agrees. The broker itself is in tests/integration/test_site_credentials.py."""

from __future__ import annotations

import re

from edgeceleryapp.broker_permissions import route, site_permissions
from edgeceleryapp.settings import Settings


def allows(pattern: str, name: str) -> bool:
    return re.search(pattern, name) is not None


def test_a_site_user_touches_its_own_queue_and_nothing_of_another_site():
    p = site_permissions("alpha", Settings())
    for pattern in (p.configure, p.write, p.read):
        assert allows(pattern, "site.alpha")
        assert allows(pattern, "alpha@login1.example.org.celery.pidbox")
        for other in ("site.beta", "site.alphabet", "beta@h.celery.pidbox", "xsite.alpha"):
            assert not allows(pattern, other), (pattern, other)


def test_a_site_user_publishes_to_argo_and_status_but_reads_and_configures_neither():
    p = site_permissions("alpha", Settings())
    for shared in ("argo", "edgecelery.status"):
        assert allows(p.write, shared)
        assert not allows(p.configure, shared)
        assert not allows(p.read, shared)
    for forbidden in ("argo.jobs", "amq.default", "", "celeryev.x"):
        for pattern in (p.configure, p.write, p.read):
            assert not allows(pattern, forbidden), (pattern, forbidden)


def test_a_site_name_is_matched_literally():
    p = site_permissions("a.b", Settings())
    assert allows(p.read, "site.a.b")
    assert not allows(p.read, "site.axb")


def test_tasks_on_rabbitmq_name_their_queues_exchange():
    amqp = Settings(broker_url="amqps://127.0.0.1:5671//")
    assert route("site.alpha", amqp) == {
        "queue": "site.alpha",
        "exchange": "site.alpha",
        "routing_key": "site.alpha",
    }
    assert route("argo", Settings(broker_url="redis://127.0.0.1:6379/0")) == {"queue": "argo"}
