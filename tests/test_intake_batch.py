"""The intake consumer takes messages in batches: each message still gets its own answer (a
job, or a rejection naming its bad fields), redelivery still makes no second job, and a batch
that cannot be taken goes back on the queue whole."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from celery.canvas import Signature
from kombu import Connection, Queue
from sqlalchemy import select

from edgeceleryapp import dead_letters, next_step
from edgeceleryapp.brokertransport import batch_producer
from edgeceleryapp.db import read_scope
from edgeceleryapp.models import ArgoJob, JobEvent, SubJob
from tests.helpers import argo_message, count
from workflows import chains, intake, intake_consumer
from workflows.inbound import Received, Screened, screen
from workflows.intake_consumer import IntakeConsumer, receive_batch


def job(name: str) -> dict:
    """A valid Argo job at alpha then beta; its status messages go to ``batch_test``."""
    return argo_message(name, job_status_routing_key="batch_test")


def as_json(body: Any) -> bytes:
    return json.dumps(body).encode()


def screened(body: Any, message_id: str | None) -> Screened:
    """A message as the consumer hands it on after screening (a str body: the job as text)."""
    return screen(Received(as_json(body), "application/json", message_id))


@pytest.fixture
def argo_queue(env) -> Iterator[Any]:
    """The first tasks, as the argo worker would receive them (memory transport)."""
    with Connection("memory://") as conn, conn.SimpleQueue(Queue("argo")) as sq:
        sq.clear()
        yield sq
        sq.clear()


def queued_tasks(sq: Any) -> list[tuple[str, list, list[str]]]:
    """(task, args, names of the chain's later tasks) of each queued message."""
    found = []
    while sq.qsize():
        message = sq.get(timeout=1)
        args, _kwargs, embed = message.payload
        later = [s["task"] for s in embed["chain"] or []]
        found.append((message.headers["task"], args, later))
        message.ack()
    return found


def test_a_batch_stores_valid_jobs_refuses_bad_ones_and_starts_each_once(env, argo_queue):
    bad = {"name": "bad", "subjobs": [{"name": "x", "site": "nowhere", "application": "echo"}]}
    items = [(job("a"), "m1"), (bad, "m2"), (json.dumps(job("b")), "m3"), (job("a"), "m1")]
    ids = receive_batch([screened(body, key) for body, key in items])

    assert ids[1] is None, "the bad message is refused"
    assert ids[0] == ids[3], "the same message id twice is one job"
    assert len({ids[0], ids[2]}) == 2
    assert count(ArgoJob) == 2 and count(SubJob) == 4 and count(JobEvent) == 6
    with read_scope() as s:
        rows = s.execute(select(SubJob.argo_job_id, SubJob.position, SubJob.site)).all()
    assert sorted(rows) == sorted(
        [(ids[0], 0, "alpha"), (ids[0], 1, "beta"), (ids[2], 0, "alpha"), (ids[2], 1, "beta")]
    )
    assert sorted(queued_tasks(argo_queue)) == sorted(
        [("argo.stage_in", [i], ["argo.advance"]) for i in (ids[0], ids[2])]
    )


def test_a_batch_of_bad_messages_stores_nothing_and_answers_each(env, argo_queue, monkeypatch):
    answers = []
    monkeypatch.setattr(dead_letters, "publish", lambda sent: answers.extend(sent) or True)
    bad = [({"name": "", "subjobs": []}, "b1"), ("{not json", "b2")]
    step = consumer(None)
    messages = [FakeMessage(key, as_json(body)) for body, key in bad]
    for message in messages:
        step.on_message(message)
    assert [m.outcome for m in messages] == ["ack", "ack"]
    assert count(ArgoJob) == 0 and count(JobEvent) == 0
    assert [body["to_state"] for _key, body in answers] == ["REJECTED", "REJECTED"]
    assert [body["message_id"] for _key, body in answers] == ["b1", "b2"]
    assert queued_tasks(argo_queue) == []


def test_a_message_delivered_again_in_a_later_batch_is_the_same_job(env, argo_queue):
    (first,) = receive_batch([screened(job("a"), "m1")])
    queued_tasks(argo_queue)
    again = receive_batch([screened(job("a"), "m1"), screened(job("c"), "m9")])
    assert again[0] == first
    assert count(ArgoJob) == 2
    started = [args[0] for _task, args, _chain in queued_tasks(argo_queue)]
    assert first in started, "still CREATED: the first delivery may have died before starting it"
    assert again[1] in started


def owed_at(argo_id: int, state: str) -> Signature:
    return chains.chain_for(next_step.for_argo(next_step.Record(argo_id, state), None))


def test_our_publisher_sends_a_chain_as_celery_does(env, argo_queue):
    owed_at(41, "SUBJOBS_COMPLETED").apply_async()
    with batch_producer("memory://") as producer:
        chains.send(owed_at(42, "SUBJOBS_COMPLETED"), producer)
    chains.send(owed_at(43, "SUBJOB_COMPLETED"))
    assert queued_tasks(argo_queue) == [
        ("argo.stage_out", [41], ["argo.finish"]),
        ("argo.stage_out", [42], ["argo.finish"]),
        ("argo.advance", [43], []),
    ]


def test_a_longer_chain_keeps_its_order(env):
    """Celery keeps the rest of a chain as a stack: the next task last."""
    ref = next_step.Record(5, "EXECUTION_FINISHED", site="alpha", argo_job_id=9)
    resume = chains.chain_for(next_step.for_subjob(ref))
    with Connection("memory://") as conn, conn.SimpleQueue(Queue("site.alpha")) as sq:
        sq.clear()
        resume.apply_async()
        chains.send(resume)
        sent = queued_tasks(sq)
    expected = ("site.postprocess", [5], ["argo.advance", "site.stage_out"])
    assert sent == [expected, expected]


class FakeMessage:
    """A raw message as kombu hands it to the consumer, which records what became of it."""

    def __init__(
        self, message_id: Any, body: bytes | str = b"", content_type: str = "application/json"
    ):
        self.properties = {"message_id": message_id}
        self.body = body
        self.content_type = content_type
        self.outcome = ""

    def ack(self) -> None:
        self.outcome = "ack"

    def requeue(self) -> None:
        self.outcome = "requeue"

    def reject(self) -> None:
        self.outcome = "reject"


class FakeHub:
    def __init__(self) -> None:
        self.later: list = []

    def call_later(self, delay: float, callback: Any) -> None:
        self.later.append(callback)


def consumer(hub: FakeHub | None) -> IntakeConsumer:
    step = IntakeConsumer.__new__(IntakeConsumer)
    step.pending, step.hub = [], hub
    return step


def deliver_one(name: str) -> FakeMessage:
    """Job ``name`` handed, as one message, to a consumer without a timer; the message, which
    records what became of it."""
    message = FakeMessage(f"{name}1", as_json(job(name)))
    consumer(None).on_message(message)
    return message


def test_messages_wait_for_the_window_then_go_as_one_batch(env, argo_queue, monkeypatch):
    batches = []
    real = intake_consumer.receive_batch
    monkeypatch.setattr(
        intake_consumer, "receive_batch", lambda items: batches.append(items) or real(items)
    )
    hub = FakeHub()
    step = consumer(hub)
    messages = [FakeMessage(f"w{i}", as_json(job(f"w{i}"))) for i in range(3)]
    for m in messages:
        step.on_message(m)
    assert len(hub.later) == 1, "one timer for the batch"
    assert [m.outcome for m in messages] == ["", "", ""], "nothing taken before the window ends"
    hub.later[0]()
    assert [len(b) for b in batches] == [3]
    assert [m.outcome for m in messages] == ["ack"] * 3
    assert count(ArgoJob) == 3


def test_a_full_batch_is_taken_at_once(env, argo_queue, monkeypatch):
    monkeypatch.setenv("EDGECELERY_INTAKE_BATCH", "2")
    from edgeceleryapp.settings import reset_settings

    reset_settings()
    step = consumer(FakeHub())
    messages = [FakeMessage(f"f{i}", as_json(job(f"f{i}"))) for i in range(2)]
    for m in messages:
        step.on_message(m)
    assert [m.outcome for m in messages] == ["ack", "ack"]


def test_a_batch_that_cannot_be_stored_goes_back_whole(env, argo_queue, monkeypatch):
    def broken(_items: list) -> list[int]:
        raise OSError("database unreachable")

    monkeypatch.setattr(intake, "store_argos", broken)
    message = deliver_one("x")
    assert message.outcome == "requeue"
    assert count(ArgoJob) == 0


def test_a_broker_that_refuses_the_first_tasks_fails_the_jobs_and_requeues(
    env, argo_queue, monkeypatch
):
    def refused(_signature: Any, _producer: Any = None) -> None:
        raise ConnectionError("broker away")

    monkeypatch.setattr(chains, "send", refused)
    message = deliver_one("r")
    assert message.outcome == "requeue"
    with read_scope() as s:
        (argo,) = s.scalars(select(ArgoJob))
    assert argo.state == "STAGED_IN_FAILED"
    assert "broker away" in argo.state_message
