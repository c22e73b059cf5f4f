"""Job messages put on the intake queue by a producer, as ATLAS's production system would."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select

from edgeceleryapp.broker_connection import connect, for_url
from edgeceleryapp.db import session_scope
from edgeceleryapp.devstack import wait_for
from edgeceleryapp.models import ArgoJob
from tests.helpers import echo_app
from tests.integration.conftest import StatusListener
from workflows.intake_consumer import intake_queue

pytestmark = pytest.mark.integration


def produce(url: str, body: object, message_id: str) -> None:
    queue = intake_queue()
    with connect(for_url(url)) as conn, conn.Producer() as producer:
        producer.publish(
            json.dumps(body) if not isinstance(body, str) else body,
            exchange=queue.exchange,
            routing_key=queue.routing_key,
            declare=[queue],
            content_type="application/json",
            content_encoding="utf-8",
            message_id=message_id,
        )


def jobs_with_user_id(user_id: str) -> list[ArgoJob]:
    with session_scope() as s:
        return list(s.scalars(select(ArgoJob).where(ArgoJob.user_id == user_id)))


def test_a_message_delivered_twice_makes_one_job_that_completes(deployment):
    echo_app(deployment.root, "alpha", name="intakeapp")
    message = {
        "name": "from-queue",
        "user_id": "prodsys.0001",
        "job_status_routing_key": "prodsys_monitor",
        "subjobs": [{"name": "one", "site": "alpha", "application": "intakeapp"}],
    }
    listener = StatusListener(deployment.broker_url, "prodsys_monitor")
    try:
        produce(deployment.broker_url, message, "msg-0001")
        produce(deployment.broker_url, message, "msg-0001")  # the producer retried
        listener.drain_until(lambda b: any(m["to_state"] == "HISTORY" for m in b), timeout=60)
    finally:
        listener.close()
    jobs = wait_for(lambda: jobs_with_user_id("prodsys.0001"), 10, "the job to be stored")
    assert len(jobs) == 1
    assert jobs[0].intake_key == "msg-0001"
    final = deployment.wait_state(jobs[0].id, {"HISTORY"})
    assert final["state"] == "HISTORY"


def test_an_invalid_message_is_answered_with_every_bad_field_and_not_stored(deployment):
    bad = {
        "name": "",
        "user_id": "prodsys.bad",
        "job_status_routing_key": "prodsys_errors",
        "subjobs": [{"name": "x", "site": "nowhere", "application": "a", "num_nodes": 0}],
    }
    listener = StatusListener(deployment.broker_url, "prodsys_errors")
    try:
        produce(deployment.broker_url, bad, "msg-bad")
        listener.drain_until(lambda b: any(m["kind"] == "intake" for m in b))
    finally:
        listener.close()
    (answer,) = [m for m in listener.bodies if m["kind"] == "intake"]
    assert answer["to_state"] == "REJECTED"
    assert answer["user_id"] == "prodsys.bad"
    fields = {e["field"] for e in answer["errors"]}
    assert fields == {"name", "subjobs[0].num_nodes", "subjobs[0].site"}
    assert jobs_with_user_id("prodsys.bad") == []
