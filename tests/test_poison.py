"""Poison messages: whatever arrives on the intake or the mail queue, the consumer neither raises
nor blocks the queue. A bad message is acknowledged, kept as a dead letter (listed, shown,
removed, re-submitted with ``edgecelery intake dead-letters``) and, on intake, answered with a
REJECTED status message that is stored first, so a failed publish is sent again. The valid
message behind a poison one is stored.

The messages go through kombu for real (the in-memory transport): published with the content
type, encoding and message id a producer chose, and consumed by the consumers' own kombu
``Consumer``, so kombu's decoding path is the one under test.
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from typing import Any

import pytest
from click.testing import CliRunner
from kombu import Connection, Queue
from sqlalchemy import select

from edgeceleryapp import dead_letters
from edgeceleryapp.cli import main
from edgeceleryapp.db import read_scope
from edgeceleryapp.devstack import free_port, wait_for
from edgeceleryapp.models import ArgoJob, DeadLetter, MailRecord
from edgeceleryapp.settings import reset_settings
from edgeceleryapp.status_outbox import status_exchange
from tasks.argo import resend_status
from tasks.mail import mail_queue
from tests.conftest import Env, _env
from tests.helpers import ROOT, argo_message, count, publish_raw
from tests.pg import empty_database
from workflows import inbound
from workflows.intake import submit_argo
from workflows.intake_consumer import IntakeConsumer, intake_queue
from workflows.mail_consumer import MailConsumer

JSON = "application/json"


def job(name: str, **fields: Any) -> bytes:
    return json.dumps(argo_message(name, job_status_routing_key="poison_test", **fields)).encode()


# (what, body, content type, message id, the field its refusal names)
POISON = [
    ("text/plain", b"hello", "text/plain", "p1", "content_type"),
    ("pickle", pickle.dumps({"name": "x"}), "application/x-python-serialize", "p2", "content_type"),
    ("invalid JSON", b'{"name": "x", ', JSON, "p3", "message"),
    ("20,000-deep nesting", b"[" * 20_000 + b"]" * 20_000, JSON, "p4", "message"),
    ("33-deep nesting", b"[" * 33 + b"]" * 33, JSON, "p5", "message"),
    ("a list message_id", job("listid"), JSON, ["a", "b"], "message_id"),
    ("a dict message_id", job("dictid"), JSON, {"id": 1}, "message_id"),
    ("a 300-character message_id", job("longid"), JSON, "m" * 300, "message_id"),
    ("an unprintable message_id", job("ctlid"), JSON, "bad\x00id", "message_id"),
    ("a 400 KB text body", json.dumps("{" + "x," * 200_000).encode(), JSON, "p6", "message"),
    ("an empty body", b"", JSON, "p7", "message"),
]


@pytest.fixture
def memory_broker(env) -> Iterator[Connection]:
    """The in-memory broker, emptied before and after: the intake and mail queues, the argo
    queue (first tasks) and a queue that catches every status message."""
    with Connection("memory://") as conn:
        answers = Queue("poison-answers", status_exchange(), routing_key="#")
        queues = [intake_queue(), mail_queue(), Queue("argo"), answers]
        for queue in queues:
            queue(conn.default_channel).declare()
            queue(conn.default_channel).purge()
        yield conn
        for queue in queues:
            queue(conn.default_channel).purge()


def consume(conn: Connection, step: Any) -> None:
    """Run the consumer step's own kombu consumers until their queue is empty; an exception in
    them fails the test (it would have stopped the worker)."""
    step.pending, step.hub = [], None
    consumers = step.get_consumers(conn.default_channel)
    for consumer in consumers:
        consumer.consume()
    try:
        while True:
            try:
                conn.drain_events(timeout=0.2)
            except TimeoutError:
                return
    finally:
        for consumer in consumers:
            consumer.cancel()


def intake_step() -> IntakeConsumer:
    return IntakeConsumer.__new__(IntakeConsumer)


def answers(conn: Connection) -> list[dict[str, Any]]:
    """Every status message (a JSON object) on the status exchange so far, in order; the
    poison the mail tests publish there is passed over."""
    found = []
    queue = Queue("poison-answers", status_exchange(), routing_key="#")(conn.default_channel)
    while (message := queue.get(no_ack=True)) is not None:
        try:
            body = json.loads(message.body)
        except (ValueError, RecursionError):
            continue
        if isinstance(body, dict):
            found.append(body)
    return found


def letters() -> list[DeadLetter]:
    with read_scope() as s:
        return list(s.scalars(select(DeadLetter).order_by(DeadLetter.id)))


@pytest.mark.parametrize(("what", "body", "content_type", "message_id", "field"), POISON)
def test_a_poison_intake_message_is_set_aside_and_the_next_job_is_stored(
    memory_broker, what, body, content_type, message_id, field
):
    publish_raw(memory_broker, intake_queue(), body, content_type, message_id)
    publish_raw(memory_broker, intake_queue(), job("after"), JSON, "after-1")
    started = time.monotonic()
    consume(memory_broker, intake_step())
    assert time.monotonic() - started < 2, f"{what}: the consumer's thread was held"

    with read_scope() as s:
        assert list(s.scalars(select(ArgoJob.name))) == ["after"], "the next job was stored"
    (letter,) = letters()
    assert letter.source == "intake"
    assert field in {e["field"] for e in letter.errors}, letter.errors
    assert bytes(letter.body) == body[: len(letter.body)] and letter.body_size == len(body)
    assert letter.message_id == (message_id if field != "message_id" else None)
    assert letter.answer_sent
    rejected = [a for a in answers(memory_broker) if a.get("to_state") == "REJECTED"]
    assert len(rejected) == 1
    assert rejected[0]["dead_letter_id"] == letter.id
    assert field in {e["field"] for e in rejected[0]["errors"]}
    assert memory_broker.default_channel.queue_declare(intake_queue().name).message_count == 0


@pytest.mark.parametrize("codec", ["zlib", "bzip2", "lzma"])
def test_a_compressed_bomb_is_set_aside_without_being_expanded(memory_broker, codec):
    """kombu decompresses a message with a ``compression`` header when it builds it, before
    any consumer sees it: 100 MB of zeros arrive as a few kilobytes. The codecs stop at
    message_max_bytes; a small compressed job still goes through."""
    from kombu.compression import compress

    bomb = b'{"name": "' + b"0" * 100_000_000 + b'"}'
    small, ct = compress(job("compressed"), codec)
    packed, _ = compress(bomb, codec)
    assert len(packed) < 1_000_000
    for body, message_id in ((packed, "bomb-1"), (small, "small-1")):
        publish_raw(
            memory_broker, intake_queue(), body, JSON, message_id, headers={"compression": ct}
        )
    consume(memory_broker, intake_step())
    with read_scope() as s:
        assert list(s.scalars(select(ArgoJob.name))) == ["compressed"]
    (letter,) = letters()
    assert letter.message_id == "bomb-1"
    assert letter.body_size == len(packed), "kept as it came: never expanded"
    assert "message_max_bytes" in json.dumps(letter.errors), letter.errors


def test_every_problem_of_a_message_is_named_at_once(memory_broker):
    publish_raw(memory_broker, intake_queue(), b"x" * 300_000, "text/plain", ["id"])
    consume(memory_broker, intake_step())
    (letter,) = letters()
    assert {e["field"] for e in letter.errors} == {"message_id", "content_type", "message"}
    assert len(letter.body) == 256 * 1024, "the body is kept up to message_max_bytes"
    assert letter.body_size == 300_000


def test_a_400_kb_text_body_under_a_raised_cap_is_refused_quickly(memory_broker, monkeypatch):
    """json5 read about 5 µs a character (36 here): 400 KB of text held the consumer for
    seconds. Seed 001's trailing commas are still read."""
    monkeypatch.setenv("EDGECELERY_MESSAGE_MAX_BYTES", str(1024 * 1024))
    reset_settings()
    text = json.dumps("{" + '"name": "x", ' * 30_000)
    assert len(text) > 400_000
    publish_raw(memory_broker, intake_queue(), text.encode(), JSON, "big")
    trailing = json.loads(job("trailing"))
    with_commas = json.dumps(trailing)[:-1] + ",}"  # a trailing comma, as seed 001 writes
    publish_raw(memory_broker, intake_queue(), json.dumps(with_commas).encode(), JSON, "t1")
    started = time.monotonic()
    consume(memory_broker, intake_step())
    assert time.monotonic() - started < 1.5
    (letter,) = letters()
    assert letter.errors[0]["problem"].startswith("not valid JSON")
    assert count(ArgoJob) == 1


def test_a_batch_with_a_bad_id_stores_its_neighbours(any_db_env, monkeypatch):
    """A non-string or over-long message_id used to fail the whole batch in the database
    (PostgreSQL enforces the 256-character column), which went back to the head of the queue
    forever."""
    with Connection("memory://") as conn:
        intake_queue()(conn.default_channel).purge()
        publish_raw(conn, intake_queue(), job("one"), JSON, "n1")
        publish_raw(conn, intake_queue(), job("long"), JSON, "m" * 300)
        publish_raw(conn, intake_queue(), job("list"), JSON, [1, 2])
        publish_raw(conn, intake_queue(), job("two"), JSON, "n2")
        monkeypatch.setenv("EDGECELERY_INTAKE_BATCH", "4")
        reset_settings()
        consume(conn, intake_step())
    with read_scope() as s:
        assert sorted(s.scalars(select(ArgoJob.intake_key))) == ["n1", "n2"]
    assert [sorted(e["field"] for e in letter.errors) for letter in letters()] == [
        ["message_id"],
        ["message_id"],
    ]


@pytest.fixture
def pg_env(postgres_url: str, tmp_path, monkeypatch) -> Iterator[Env]:
    """``env`` on the private PostgreSQL server only: it enforces column widths."""
    empty_database(postgres_url)
    yield from _env(tmp_path, monkeypatch, postgres_url)


def test_a_batch_that_fails_to_store_is_split_down_to_the_bad_message(pg_env, monkeypatch):
    """Past screening (its limit raised here), a 300-character id fails the insert on
    PostgreSQL; the batch is split until that one message is set aside."""
    monkeypatch.setattr(inbound, "MESSAGE_ID_MAX", 1000)
    with Connection("memory://") as conn:
        intake_queue()(conn.default_channel).purge()
        for i in range(7):
            key = "k" * 300 if i == 4 else f"s{i}"
            publish_raw(conn, intake_queue(), job(f"j{i}"), JSON, key)
        monkeypatch.setenv("EDGECELERY_INTAKE_BATCH", "7")
        reset_settings()
        consume(conn, intake_step())
        assert conn.default_channel.queue_declare(intake_queue().name).message_count == 0
    with read_scope() as s:
        stored = sorted(s.scalars(select(ArgoJob.name)))
    assert stored == ["j0", "j1", "j2", "j3", "j5", "j6"]
    (letter,) = letters()
    assert letter.errors[0]["field"] == "message"
    assert letter.errors[0]["problem"].startswith("could not be stored: ")
    assert "too long" in letter.errors[0]["problem"]


def test_a_rejected_answer_whose_publish_fails_is_sent_by_the_sweep(memory_broker, monkeypatch):
    """The broker is away (a closed port) when the answer is published: the letter keeps it,
    unsent, and the status sweep sends it once the broker is back."""
    monkeypatch.setenv("EDGECELERY_BROKER_URL", f"redis://127.0.0.1:{free_port()}/0")
    monkeypatch.setenv("EDGECELERY_STATUS_RESEND_AFTER", "0.01")
    reset_settings()
    publish_raw(memory_broker, intake_queue(), b"not json", JSON, "lost-1")
    consume(memory_broker, intake_step())
    (letter,) = letters()
    assert not letter.answer_sent
    assert answers(memory_broker) == []

    monkeypatch.setenv("EDGECELERY_BROKER_URL", "memory://")
    reset_settings()
    # The sweep spares answers younger than status_resend_after (a publish may be under way).
    wait_for(lambda: resend_status() == 1, 5, "the sweep to send the answer", interval=0.01)
    (answer,) = answers(memory_broker)
    assert answer["to_state"] == "REJECTED"
    assert answer["message_id"] == "lost-1"
    assert answer["dead_letter_id"] == letter.id
    assert letters()[0].answer_sent
    assert resend_status() == 0, "sent once"


def test_a_schema_refusal_is_a_dead_letter_that_can_be_resubmitted(env, memory_broker, monkeypatch):
    """Refused for naming a site not configured; once the site is configured the operator
    re-submits it and it becomes a job."""
    body = json.dumps(
        {"name": "later", "subjobs": [{"name": "a", "site": "gamma", "application": "echo"}]}
    ).encode()
    publish_raw(memory_broker, intake_queue(), body, JSON, "g1")
    consume(memory_broker, intake_step())
    (letter,) = letters()
    assert letter.errors[0]["field"] == "subjobs[0].site"
    runner = CliRunner()

    listed = runner.invoke(main, ["intake", "dead-letters", "ls", "--json"])
    assert listed.exit_code == 0, listed.output
    (row,) = json.loads(listed.output)
    assert (row["id"], row["message_id"], row["source"]) == (letter.id, "g1", "intake")
    assert "gamma" in row["reason"]
    shown = runner.invoke(main, ["intake", "dead-letters", "show", str(letter.id)])
    assert shown.exit_code == 0 and '"site": "gamma"' in shown.output
    raw = runner.invoke(main, ["intake", "dead-letters", "show", str(letter.id), "--raw"])
    assert raw.stdout_bytes == body

    again = runner.invoke(main, ["intake", "dead-letters", "resubmit", str(letter.id)])
    assert again.exit_code == 2, "still no site gamma"
    assert "subjobs[0].site" in again.stderr
    assert len(letters()) == 1

    monkeypatch.setenv("EDGECELERY_SITES__GAMMA__WORKDIR", str(env.site_workdir("gamma")))
    reset_settings()
    again = runner.invoke(main, ["intake", "dead-letters", "resubmit", str(letter.id)])
    assert again.exit_code == 0, again.output
    with read_scope() as s:
        argo_id = int(again.output.split("argo job ")[1].split(";")[0])
        argo = s.get(ArgoJob, argo_id)
        assert argo is not None and (argo.name, argo.intake_key) == ("later", "g1")
    assert letters() == []


def test_dead_letters_are_removed_all_or_none(memory_broker):
    for i in range(2):
        publish_raw(memory_broker, intake_queue(), b"{", JSON, f"r{i}")
    consume(memory_broker, intake_step())
    first, second = (letter.id for letter in letters())
    runner = CliRunner()
    missing = runner.invoke(main, ["intake", "dead-letters", "rm", str(first), "999"])
    assert missing.exit_code == 1 and "999" in missing.stderr
    assert len(letters()) == 2
    assert runner.invoke(main, ["intake", "dead-letters", "rm", str(first)]).exit_code == 0
    assert [letter.id for letter in letters()] == [second]
    cannot = runner.invoke(main, ["intake", "dead-letters", "resubmit", "999"])
    assert cannot.exit_code == 1


def mail_step() -> MailConsumer:
    return MailConsumer.__new__(MailConsumer)


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b"hello", "text/plain"),
        (pickle.dumps({"kind": "argo"}), "application/x-python-serialize"),
        (b'{"kind": "argo", ', JSON),
        (b"[" * 20_000 + b"]" * 20_000, JSON),
        # Past screening, recording fails for good (no int that large in the database): it
        # used to go back on the queue, forever.
        (
            json.dumps(
                {"kind": "argo", "argo_job_id": 2**70, "event_id": 1, "to_state": "HISTORY"}
            ).encode(),
            JSON,
        ),
    ],
    ids=["text/plain", "pickle", "invalid JSON", "deep", "unstorable"],
)
def test_a_poison_status_message_does_not_stop_the_mail_consumer(memory_broker, body, content_type):
    argo_id = submit_argo(argo_message("mailed", email="ops@example.org"), start=False)
    status = {"kind": "argo", "argo_job_id": argo_id, "event_id": 7, "to_state": "HISTORY"}
    publish_raw(memory_broker, mail_queue(), body, content_type, None)
    publish_raw(memory_broker, mail_queue(), json.dumps(status).encode(), JSON, None)
    consume(memory_broker, mail_step())
    with read_scope() as s:
        assert list(s.scalars(select(MailRecord.event_id))) == [7], "the next one was recorded"
    (letter,) = letters()
    assert letter.source == "mail" and letter.answer is None
    assert bytes(letter.body) == body
    assert memory_broker.default_channel.queue_declare(mail_queue().name).message_count == 0
    assert not [a for a in answers(memory_broker) if a.get("to_state") == "REJECTED"]


def test_a_mail_letter_cannot_be_resubmitted(memory_broker):
    publish_raw(memory_broker, mail_queue(), b"hello", "text/plain", None)
    consume(memory_broker, mail_step())
    (letter,) = letters()
    result = CliRunner().invoke(main, ["intake", "dead-letters", "resubmit", str(letter.id)])
    assert result.exit_code == 1 and "only intake messages" in result.stderr
    assert dead_letters.listing(source="mail")[0]["id"] == letter.id


BROKEN_WORKER = """
    from celery import bootsteps

    from edgeceleryapp.celery import app
    from edgeceleryapp.cli import main


    class Broken(bootsteps.StartStopStep):
        def start(self, consumer):
            raise RuntimeError("an unrecoverable error")


    app.steps["consumer"].add(Broken)
    main(["worker", "--argo"])
"""


def test_the_argo_worker_exits_non_zero_on_an_unrecoverable_error(env, tmp_path):
    """Celery logs "Unrecoverable error" and stops with code 1; `edgecelery worker` used to
    drop that code and exit 0, so a restart-on-failure supervisor never restarted it."""
    script = tmp_path / "broken_worker.py"
    script.write_text(textwrap.dedent(BROKEN_WORKER))
    done = subprocess.run(
        [sys.executable, str(script)],
        cwd=ROOT,
        env={**os.environ, "EDGECELERY_CONFIG": str(env.config)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "Unrecoverable error" in done.stderr, done.stderr[-3000:]
    assert done.returncode == 1
