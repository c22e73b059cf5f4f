"""Leases and the reconciler: the database drives, messages carry work (the lease and sweep
statements on SQLite and PostgreSQL alike).

Messages are lost here as a broker restarted empty loses them: the test process's broker is
memory:// and nothing consumes it. Time passes by moving a record's clock back, not by
sleeping.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select, update

from edgeceleryapp import applications, job_views, leases
from edgeceleryapp.db import engine, read_scope, session_scope
from edgeceleryapp.errors import TransientError
from edgeceleryapp.models import ArgoJob, JobEvent, SiteMonitor, SubJob, utcnow
from edgeceleryapp.state_store import move_argo, move_subjob
from tasks import reconcile, site, site_steps
from tasks.retry_policy import Busy
from tests.helpers import argo_message, balsam_message, echo_app, subjob, subjob_states
from workflows.intake import submit_argo, submit_balsam


def age(model: type, ident: int, seconds: float = 600, **values: object) -> None:
    """The record made its last progress ``seconds`` ago (and takes ``values``)."""
    table = model.__table__
    then = utcnow() - timedelta(seconds=seconds)
    with engine().begin() as conn:
        conn.execute(update(table).where(table.c.id == ident).values(updated_at=then, **values))


def last_event(subjob_id: int) -> JobEvent:
    with read_scope() as s:
        return s.scalars(
            select(JobEvent).where(JobEvent.subjob_id == subjob_id).order_by(JobEvent.id.desc())
        ).first()


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, tuple]]:
    """What the reconciler sends: (task, args) of each chain's first step."""
    out: list[tuple[str, tuple]] = []

    def capture(signature, producer=None) -> None:
        first = signature.tasks[0] if hasattr(signature, "tasks") else signature
        out.append((first.task, tuple(first.args)))

    monkeypatch.setattr(reconcile, "send", capture)
    return out


def test_a_lost_first_message_is_sent_again_once_and_recorded(any_db_env, sent):
    env = any_db_env
    echo_app(env.root, "alpha")
    job = submit_balsam(balsam_message())  # its first chain went nowhere
    assert reconcile.reconcile_site("alpha") == [], "within the grace period: left alone"
    age(SubJob, job)
    assert reconcile.reconcile_site("alpha") == [job]
    assert sent == [("site.stage_in", (job,))]
    event = last_event(job)
    assert (event.from_state, event.to_state) == ("CREATED", "CREATED"), "the state stays"
    assert event.message == "re-driven: no progress for 600 s; sending site.stage_in again"
    assert reconcile.reconcile_site("alpha") == [], "the re-drive is the progress now"
    assert sent == [("site.stage_in", (job,))]


def test_parked_held_leased_and_ended_records_are_left_alone(any_db_env, sent):
    env = any_db_env
    echo_app(env.root, "alpha")
    in_flight, waiting, leased, failed = (submit_balsam(balsam_message()) for _ in range(4))
    move_subjob(in_flight, "CREATED", ["STAGED_IN", "PREPROCESSED", "SUBMITTED"])
    move_subjob(waiting, "CREATED", ["STAGED_IN", "PREPROCESSED"])
    move_subjob(failed, "CREATED", ["STAGED_IN_FAILED"], "no input")
    held = submit_balsam(balsam_message(), start=False)
    for job in (in_flight, waiting, leased, failed, held):
        age(SubJob, job)
    age(SubJob, waiting, waiting_since=utcnow())
    age(SubJob, leased, lease_owner="someone", lease_until=utcnow() + timedelta(seconds=20))
    assert reconcile.reconcile_site("alpha") == []
    age(SubJob, leased, lease_until=utcnow() - timedelta(seconds=1))  # its holder died
    assert reconcile.reconcile_site("alpha") == [leased]
    assert sent == [("site.stage_in", (leased,))]


@pytest.mark.usefixtures("any_db_env")
def test_a_later_subjob_waits_until_its_argo_job_hands_it_over(sent):
    argo_id = submit_argo(argo_message())
    first, second = (sj.id for sj in _subjobs(argo_id))
    for job in (first, second):
        age(SubJob, job)
    age(ArgoJob, argo_id)
    assert reconcile.reconcile_site("alpha") == [] and reconcile.reconcile_site("beta") == []
    assert reconcile.reconcile_argo() == [argo_id]
    assert sent == [("argo.stage_in", (argo_id,))]
    assert move_argo(argo_id, "CREATED", ["STAGED_IN", "SUBJOB_SUBMITTED"], current_subjob=0)
    age(SubJob, first)
    assert reconcile.reconcile_site("beta") == [], "the second subjob is not handed over yet"
    assert reconcile.reconcile_site("alpha") == [first]
    assert sent[-1] == ("site.stage_in", (first,))


def test_a_lost_hand_off_to_candidate_sites_is_made_by_the_argo_sweep(any_db_env, sent):
    """Its message lost before the site was chosen, a subjob naming candidates still has the
    first one as its site; with that site's worker down, no site sweep would send it. The
    argo worker's sweep makes the choice (here beta: alpha's worker is not seen) and sends
    the first run there."""
    for name in ("alpha", "beta"):
        applications.add_app("echo", name, "/bin/true")
    with session_scope() as s:
        s.merge(SiteMonitor(site="beta", worker_seen_at=utcnow()))
    message = {"name": "m", "sites": ["alpha", "beta"], "application": "echo"}
    job = submit_balsam(message, start=False)
    single = submit_balsam(balsam_message(site="beta"), start=False)
    for ident in (job, single):  # stored, then the intake died before the hand-off
        age(SubJob, ident, dispatched_at=None)
    assert subjob(job).site == "alpha"
    assert reconcile.reconcile_site("beta") == [single], "one site: its site's sweep sends it"
    assert reconcile.reconcile_site("alpha") == [], "not the first candidate's: one sweep"
    assert reconcile.reconcile_handoffs() == [job]
    assert sent == [("site.stage_in", (single,)), ("site.stage_in", (job,))]
    assert subjob(job).site == "beta"
    assert reconcile.reconcile_handoffs() == [], "chosen: the site's own sweep goes on"
    age(SubJob, job, dispatched_at=None)  # that message was lost too
    assert reconcile.reconcile_handoffs() == []
    assert reconcile.reconcile_site("beta") == [job]


def test_an_argo_job_whose_advance_was_lost_is_advanced(env, sent):
    argo_id = submit_argo(argo_message())
    loop = ["STAGED_IN", "SUBJOB_SUBMITTED", "SUBJOB_IN_PREPROCESSED", "SUBJOB_QUEUED"]
    loop += ["SUBJOB_RUNNING", "SUBJOB_RUN_FINISHED", "SUBJOB_IN_POSTPROCESSED"]
    assert move_argo(argo_id, "CREATED", [*loop, "SUBJOB_COMPLETED"])
    age(ArgoJob, argo_id)
    assert reconcile.reconcile_argo() == [argo_id]
    assert sent == [("argo.advance", (argo_id,))]


def test_a_second_execution_finds_the_lease_and_ends_quietly(any_db_env):
    env = any_db_env
    echo_app(env.root, "alpha")
    job = submit_balsam(balsam_message(), start=False)
    assert leases.take(leases.SUBJOBS, job, "CREATED", "first-copy", 30) is not None
    with pytest.raises(Busy, match=r"another execution is working on site\.stage_in"):
        site.execute("stage_in", job)
    result = site.stage_in.apply(args=(job,))
    assert result.successful(), "no retry, no failure: a quiet end"
    assert subjob_states(job) == ["CREATED"]
    leases.release(leases.SUBJOBS, job, "first-copy")
    site.execute("stage_in", job)
    assert subjob(job).state == "STAGED_IN"
    assert subjob(job).lease_owner is None, "the move that ends a step clears its lease"


def test_a_step_that_fails_gives_its_lease_back_at_once(env, monkeypatch):
    echo_app(env.root, "alpha")
    job = submit_balsam(balsam_message(), start=False)

    def flaky(_subjob):
        raise TransientError("the transfer server is busy")

    monkeypatch.setattr(site_steps, "stage_in", flaky)
    monkeypatch.setitem(site.WORK, "stage_in", flaky)
    with pytest.raises(TransientError):
        site.execute("stage_in", job)
    assert (subjob(job).state, subjob(job).lease_owner) == ("CREATED", None)


def test_a_retry_is_due_later_and_the_reconciler_waits_for_it(env, sent):
    echo_app(env.root, "alpha")
    job = submit_balsam(balsam_message())
    age(SubJob, job)
    site.retrying("stage_in", job, 3600, "retrying stage-in in 3600 s (attempt 1 of 2): busy")
    assert reconcile.reconcile_site("alpha") == []


def test_renewal_keeps_a_working_step_s_lease_alive(env):
    echo_app(env.root, "alpha")
    job = submit_balsam(balsam_message(), start=False)
    assert leases.take(leases.SUBJOBS, job, "CREATED", "worker", 30) is not None
    age(SubJob, job, lease_until=utcnow() + timedelta(seconds=1))
    leases._renewer.renew({("subjobs", job, "worker"): 30}, utcnow())
    left = (subjob(job).lease_until - utcnow()).total_seconds()
    assert 25 < left <= 30
    leases._renewer.renew({("subjobs", job, "another"): 30}, utcnow() + timedelta(seconds=60))
    assert (subjob(job).lease_until - utcnow()).total_seconds() <= 30, "only its owner renews"


def test_a_job_stored_without_starting_is_held(env):
    job = submit_balsam(balsam_message(), start=False)
    assert subjob(job).dispatched_at == leases.HELD


def _subjobs(argo_id: int) -> list[SubJob]:
    with read_scope() as s:
        return list(
            s.scalars(select(SubJob).where(SubJob.argo_job_id == argo_id).order_by(SubJob.id))
        )


def test_show_says_what_each_record_waits_for(env):
    echo_app(env.root, "alpha")
    first, second, third = (submit_balsam(balsam_message()) for _ in range(3))
    for job in (second, third):
        move_subjob(job, "CREATED", ["STAGED_IN", "PREPROCESSED"])
        age(SubJob, job, 5, waiting_since=utcnow(), state_message="waiting: site alpha is full")
    assert leases.take(leases.SUBJOBS, first, "CREATED", "worker-7", 30) is not None
    shown = {job: job_views.show_subjob(job)["waiting"] for job in (first, second, third)}
    assert shown[first]["for"] == "a step at work"
    assert shown[first]["lease_holder"] == "worker-7"
    assert (shown[second]["for"], shown[second]["position"]) == ("admission", 1)
    assert (shown[third]["position"], shown[third]["reason"]) == (2, "waiting: site alpha is full")
    leases.release(leases.SUBJOBS, first, "worker-7")
    assert job_views.show_subjob(first)["waiting"]["for"] == "site.stage_in"
    assert "redrive_at" in job_views.show_subjob(first)["waiting"]


def test_argo_show_points_at_the_subjob_it_waits_for(env):
    argo_id = submit_argo(argo_message())
    first = _subjobs(argo_id)[0].id
    assert move_argo(argo_id, "CREATED", ["STAGED_IN", "SUBJOB_SUBMITTED"], current_subjob=0)
    shown = job_views.show_argo(argo_id)
    assert shown["waiting"]["for"] == f"subjob {first}"
    assert shown["subjobs"][0]["waiting"]["for"] == "site.stage_in"
    assert shown["subjobs"][1]["waiting"]["for"] == "its turn in the Argo job"
    move_subjob(first, "CREATED", ["STAGED_IN_FAILED"], "no input")
    assert job_views.show_argo(argo_id)["waiting"] is None, "a failed job waits for nothing"
