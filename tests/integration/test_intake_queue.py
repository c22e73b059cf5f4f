"""Job messages put on the intake queue by a producer, as ATLAS's production system would."""

from __future__ import annotations

import json
import pickle

import pytest
from sqlalchemy import select

from edgeceleryapp.broker_connection import connect, for_url
from edgeceleryapp.db import session_scope
from edgeceleryapp.devstack import wait_for
from edgeceleryapp.models import ArgoJob
from tests.helpers import echo_app, publish_raw
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


def test_poison_messages_are_set_aside_and_the_job_after_them_runs(deployment):
    """Each of these used to stop the argo worker (exit code 0, the message back at the head
    of the queue, every restart dying again), or to fail its whole batch in the database."""
    echo_app(deployment.root, "alpha", name="afterpoison")
    url = deployment.broker_url
    poison = [
        (b"hello", "text/plain", "poison-text"),
        (pickle.dumps({"name": "x"}), "application/x-python-serialize", "poison-pickle"),
        (b'{"name": ', "application/json", "poison-json"),
        (b"[" * 20_000 + b"]" * 20_000, "application/json", "poison-deep"),
        (json.dumps({"name": "listid"}).encode(), "application/json", ["a", "list"]),
        (json.dumps({"name": "longid"}).encode(), "application/json", "m" * 300),
        (json.dumps("{" + "x," * 200_000).encode(), "application/json", "poison-400kb"),
    ]
    if url.startswith("amqp"):
        # AMQP's message_id is a short string: no client can send a list or 300 characters.
        poison = [p for p in poison if isinstance(p[2], str) and len(p[2]) <= 255]
    before = {
        row["id"] for row in json.loads(deployment.cli("intake", "dead-letters", "ls", "--json"))
    }
    listener = StatusListener(url, "job_status")  # undecodable: the default routing key
    try:
        for body, content_type, message_id in poison:
            with connect(for_url(url)) as conn:
                publish_raw(conn, intake_queue(), body, content_type, message_id)
        produce(
            url,
            {
                "name": "after-poison",
                "user_id": "prodsys.after",
                "subjobs": [{"name": "one", "site": "alpha", "application": "afterpoison"}],
            },
            "msg-after-poison",
        )
        listener.drain_until(
            lambda b: sum(m.get("to_state") == "REJECTED" for m in b) >= len(poison), 60
        )
    finally:
        listener.close()
    (job,) = wait_for(lambda: jobs_with_user_id("prodsys.after"), 30, "the job after the poison")
    assert deployment.wait_state(job.id, {"HISTORY"})["state"] == "HISTORY"
    assert deployment.workers["argo"].process.poll() is None, "the argo worker is still up"

    listed = json.loads(deployment.cli("intake", "dead-letters", "ls", "--json"))
    letters = [row for row in listed if row["id"] not in before]
    assert len(letters) == len(poison)
    rejected = [m for m in listener.bodies if m.get("to_state") == "REJECTED"]
    assert {m["dead_letter_id"] for m in rejected} == {row["id"] for row in letters}
    reasons = {row["reason"].split(":")[0] for row in letters}
    bad_ids = any(not isinstance(m, str) or len(m) > 255 for _b, _c, m in poison)
    assert reasons == {"content_type", "message"} | ({"message_id"} if bad_ids else set())
    with connect(for_url(url)) as conn:
        left = intake_queue()(conn.default_channel).queue_declare()
        assert left.message_count == 0
