"""Per-site broker credentials on RabbitMQ: each site worker logs in with its own client
certificate, whose user may touch only what a site worker must
(edgeceleryapp/broker_permissions.py). Site A's credentials cannot consume site B's queue or
the Argo queue, delete the Argo queue, read status messages, or put a job on the intake queue;
and site workers holding only their own credentials still run a two-site job end to end."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from amqp.exceptions import AccessRefused
from kombu import Connection

from edgeceleryapp import broker_connection
from edgeceleryapp.broker_permissions import site_permissions
from edgeceleryapp.devstack import wait_for
from edgeceleryapp.rabbitmq_server import RabbitMQServer
from edgeceleryapp.settings import get_settings
from edgeceleryapp.throwaway_ca import Issued
from tests.helpers import ARGO_ENDS, JOHNDOE, argo_message, echo_app
from tests.integration.conftest import Deployment

pytestmark = pytest.mark.integration

SITES = ("alpha", "beta")
QUICK = "lease_seconds = 3\nredrive_after = 10\n[retry]\nmax_retries = 3\nbackoff_base = 0.2"


def site_env(issued: Issued) -> dict[str, str]:
    return {
        "EDGECELERY_BROKER__CERT_FILE": str(issued.cert_file),
        "EDGECELERY_BROKER__KEY_FILE": str(issued.key_file),
    }


@pytest.fixture(scope="module")
def stack(
    rabbitmq_node: RabbitMQServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Deployment, dict[str, Issued]]]:
    """The argo worker with the central certificate; each site worker with its own, whose
    user has only ``site_permissions``."""
    root = tmp_path_factory.mktemp("site-creds")
    with Deployment.running(
        root, SITES, workers=("argo",), rabbitmq=rabbitmq_node, poll_interval=0.3, extra=QUICK
    ) as dep:
        vhost = root.name
        certs: dict[str, Issued] = {}
        for site in SITES:
            user = f"site-{site}-{vhost}"
            certs[site] = rabbitmq_node.tls.ca.issue(user)
            allowed = site_permissions(site)
            rabbitmq_node.add_user(
                user, allowed.configure, allowed.write, allowed.read, vhost=vhost
            )
        for site in SITES:
            dep.start_worker(site, wait=False, env_extra=site_env(certs[site]))
        # Answering the central ping is a pidbox reply made with the site's own login.
        dep.wait_for_workers(list(SITES))
        yield dep, certs


def connect_as(dep: Deployment, issued: Issued) -> Connection:
    settings = broker_connection.for_url(dep.broker_url)
    broker = settings.broker.model_copy(
        update={"cert_file": issued.cert_file, "key_file": issued.key_file}
    )
    return broker_connection.connect(settings.model_copy(update={"broker": broker}))


def refused(dep: Deployment, issued: Issued, action: Callable[[Any], object]) -> bool:
    """Whether the broker refuses ``action(channel)`` to this login. A refused publish is
    answered only by closing the channel, so a round trip follows every action."""
    with connect_as(dep, issued) as conn:
        channel = conn.channel()
        try:
            action(channel)
            channel.basic_qos(0, 1, False)
        except AccessRefused:
            return True
        return False


def queue_length(dep: Deployment, queue: str) -> int:
    with broker_connection.connect(broker_connection.for_url(dep.broker_url)) as conn:
        return conn.default_channel.queue_declare(queue, passive=True).message_count


def test_site_credentials_reach_only_what_a_site_worker_needs(stack):
    dep, certs = stack
    alpha = certs["alpha"]
    settings = get_settings()
    intake = settings.intake_queue
    # Something a site worker does is allowed: the control that the refusals are real.
    assert not refused(dep, alpha, lambda ch: ch.queue_declare("site.alpha", passive=True))
    assert not refused(dep, alpha, lambda ch: ch.basic_consume("site.alpha", callback=print))
    with connect_as(dep, alpha) as conn:
        conn.default_channel.basic_qos(0, 1, False)

    # Another site's queue, the Argo queue: not to consume, not to take messages from.
    assert refused(dep, alpha, lambda ch: ch.basic_consume("site.beta", callback=print))
    assert refused(dep, alpha, lambda ch: ch.basic_get("site.beta"))
    assert refused(dep, alpha, lambda ch: ch.basic_consume("argo", callback=print))
    # Nor to delete, purge or re-declare the Argo queue.
    assert refused(dep, alpha, lambda ch: ch.queue_delete("argo"))
    assert refused(dep, alpha, lambda ch: ch.queue_purge("argo"))
    assert refused(dep, alpha, lambda ch: ch.queue_declare("argo", durable=True))
    # Nor to send another site's worker a task.
    assert refused(
        dep, alpha, lambda ch: ch.basic_publish(ch.prepare_message(b"{}"), "site.beta", "site.beta")
    )
    # Nor to read every job's status messages by binding its own queue to the exchange.
    assert refused(
        dep, alpha, lambda ch: ch.queue_bind("site.alpha", settings.status_exchange, "#")
    )

    # No intake message: neither through the intake exchange nor the default one.
    before = queue_length(dep, intake)
    job = json.dumps(argo_message("forged", sites=("alpha",))).encode()
    assert refused(dep, alpha, lambda ch: ch.basic_publish(ch.prepare_message(job), intake, intake))
    assert refused(dep, alpha, lambda ch: ch.basic_publish(ch.prepare_message(job), "", intake))
    assert queue_length(dep, intake) == before
    # The Argo queue is still there (the central login's passive declare finds it).
    assert queue_length(dep, "argo") >= 0


def test_site_workers_with_their_own_credentials_run_a_two_site_job(stack):
    dep, _ = stack
    echo_app(dep.root, "alpha", name="stepone")
    echo_app(dep.root, "beta", name="steptwo")
    out = dep.data / "creds-out"
    argo_id = dep.submit(
        argo_message(
            "creds",
            user_id="creds.job001",
            group_identifier="group.creds",
            **JOHNDOE,
            subjobs=[
                {"name": "one", "site": "alpha", "application": "stepone"},
                {"name": "two", "site": "beta", "application": "steptwo"},
            ],
            output_url=f"local://{out}",
        )
    )
    final = dep.wait_state(argo_id, ARGO_ENDS, timeout=90)
    assert final["state"] == "HISTORY", final
    assert (out / "runs.log").read_text() == "run\nrun\n"
    # Nothing a site worker did was refused on the way (events, status messages, replies).
    for site in SITES:
        log = Path(dep.workers[site].log).read_text()
        assert "ACCESS_REFUSED" not in log and "access_refused" not in log, log[-3000:]


def test_inspect_answers_from_site_workers_with_their_own_credentials(stack):
    """``celery inspect stats``: each site worker replies (reply.celery.pidbox) as itself."""
    from celery import Celery

    dep, _ = stack
    settings = broker_connection.for_url(dep.broker_url)
    probe = Celery("probe", broker=dep.broker_url)
    probe.conf.broker_use_ssl = broker_connection.ssl_options(settings)
    probe.conf.broker_login_method = broker_connection.login_method(settings)

    def every_site_answered() -> set[str] | None:
        stats = probe.control.inspect(timeout=1.0).stats() or {}
        answered = {name.split("@")[0] for name in stats}
        return answered if set(SITES) <= answered else None

    try:
        assert wait_for(every_site_answered, 30, "inspect stats from every site")
    finally:
        probe.close()
