"""The status outbox: every committed change goes out as a message, its "published" mark rides
on the process's next write transaction, and what did not go out is sent again."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from kombu import Connection, Queue
from sqlalchemy import select, text

from edgeceleryapp import status_outbox
from edgeceleryapp.db import engine, read_scope
from edgeceleryapp.models import JobEvent
from edgeceleryapp.state_store import Move, move_subjob, move_subjobs
from tasks.argo import resend_status
from tests.helpers import balsam_message
from workflows.intake import submit_balsam


@pytest.fixture
def watched(env) -> Iterator[list[dict]]:
    """Status messages as a consumer bound to the status exchange receives them."""
    received: list[dict] = []
    with Connection("memory://") as conn:
        queue = Queue("outbox-test", status_outbox.status_exchange(), routing_key="#")
        with conn.SimpleQueue(queue) as sq:

            def drain() -> list[dict]:
                while sq.qsize():
                    message = sq.get(timeout=1)
                    received.append(message.payload)
                    message.ack()
                return received

            sq.drain = drain  # type: ignore[attr-defined]
            yield sq
            sq.clear()


@pytest.fixture
def no_timer(monkeypatch: pytest.MonkeyPatch) -> None:
    """Marks wait for a transaction only (the timer would write them after a minute)."""
    monkeypatch.setattr(status_outbox, "MARK_DELAY", 60.0)


def published(subjob_id: int) -> dict[str, bool]:
    with read_scope() as s:
        events = s.scalars(select(JobEvent).where(JobEvent.subjob_id == subjob_id))
        return {e.to_state: e.published for e in events}


def test_the_mark_rides_on_the_next_write_transaction(watched, no_timer):
    job = submit_balsam(balsam_message(), start=False)
    assert [m["to_state"] for m in watched.drain()] == ["CREATED"]
    assert published(job) == {"CREATED": False}, "sent, mark pending"

    assert move_subjob(job, "CREATED", ["STAGED_IN"])
    assert [m["to_state"] for m in watched.drain()] == ["CREATED", "STAGED_IN"]
    assert published(job) == {"CREATED": True, "STAGED_IN": False}

    status_outbox.write_pending_marks()
    assert published(job) == {"CREATED": True, "STAGED_IN": True}


def test_a_transaction_that_loses_its_race_keeps_the_marks_for_the_next(watched, no_timer):
    job = submit_balsam(balsam_message(), start=False)
    assert not move_subjob(job, "PREPROCESSED", ["SUBMITTED"]), "the subjob is CREATED"
    assert published(job) == {"CREATED": False}
    assert move_subjob(job, "CREATED", ["STAGED_IN"])
    assert published(job)["CREATED"] is True


def test_the_timer_writes_marks_when_no_transaction_comes(watched, monkeypatch):
    monkeypatch.setattr(status_outbox, "MARK_DELAY", 0.05)
    job = submit_balsam(balsam_message(), start=False)
    timer = status_outbox._marks.timer
    assert timer is not None
    timer.join(timeout=10)
    assert published(job) == {"CREATED": True}


def test_messages_that_did_not_go_out_are_sent_again(watched, no_timer, monkeypatch):
    monkeypatch.setattr(status_outbox, "publish", lambda messages: False)  # the broker is away
    job = submit_balsam(balsam_message(), start=False)
    assert move_subjob(job, "CREATED", ["STAGED_IN"])
    assert watched.drain() == []
    assert published(job) == {"CREATED": False, "STAGED_IN": False}
    monkeypatch.undo()

    assert resend_status() == 0, "younger than status_resend_after: their mark may be pending"
    assert status_outbox.flush(older_than=0) == 2
    assert [m["to_state"] for m in watched.drain()] == ["CREATED", "STAGED_IN"]
    assert published(job) == {"CREATED": True, "STAGED_IN": True}
    assert status_outbox.flush() == 0, "nothing is sent twice once marked"


def test_the_sweep_reads_only_unpublished_events_through_their_index(env):
    query = select(JobEvent.id).where(JobEvent.published == status_outbox.false())
    sql = str(query.compile(engine(), compile_kwargs={"literal_binds": True}))
    with engine().connect() as conn:
        plan = " ".join(str(row) for row in conn.execute(text(f"EXPLAIN QUERY PLAN {sql}")))
    assert "ix_job_events_unpublished" in plan


def test_many_moves_in_one_transaction_leave_out_the_one_that_lost_its_race(watched, no_timer):
    first, moved_away, last = (submit_balsam(balsam_message(), start=False) for _ in range(3))
    assert move_subjob(moved_away, "CREATED", ["STAGED_IN"]), "another worker moved it"
    watched.drain()
    del watched.drain()[:]
    made = move_subjobs(
        [
            Move(first, "CREATED", ["STAGED_IN", "PREPROCESSED"], "ready", {"attempt": 4}),
            Move(moved_away, "CREATED", ["STAGED_IN"]),
            Move(last, "CREATED", ["STAGED_IN"]),
        ]
    )
    assert made == [True, False, True]
    sent = [(m["to_state"], m.get("state_message", "")) for m in watched.drain()]
    assert [state for state, _ in sent] == ["STAGED_IN", "PREPROCESSED", "STAGED_IN"]
    with read_scope() as s:
        events = s.execute(
            select(JobEvent.subjob_id, JobEvent.to_state).where(
                JobEvent.subjob_id.in_([first, moved_away, last])
            )
        ).all()
    assert sorted(events) == sorted(
        [
            (first, "CREATED"),
            (first, "STAGED_IN"),
            (first, "PREPROCESSED"),
            (moved_away, "CREATED"),
            (moved_away, "STAGED_IN"),
            (last, "CREATED"),
            (last, "STAGED_IN"),
        ]
    ), "the lost move wrote no event"
    with read_scope() as s:
        row = s.execute(text("SELECT state, attempt FROM subjobs WHERE id = :i"), {"i": first})
        assert tuple(row.one()) == ("PREPROCESSED", 4)


def test_many_moves_refuse_a_move_the_machine_does_not_allow(env):
    job = submit_balsam(balsam_message(), start=False)
    with pytest.raises(ValueError, match=f"subjob {job}: CREATED -> JOB_FINISHED"):
        move_subjobs([Move(job, "CREATED", ["JOB_FINISHED"])])
