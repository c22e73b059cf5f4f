"""The state machines of seed 000 (2.1.1, 2.2.1), as pure functions."""

import pytest

from edgeceleryapp import next_step, states
from edgeceleryapp.states import ARGO, BALSAM, Readiness


def test_every_state_has_its_failure_state():
    for machine in (BALSAM, ARGO):
        for state in machine.path:
            assert states.failed(state) in machine.states


def test_balsam_success_path_moves_one_step_at_a_time():
    for frm, to in zip(BALSAM.path, BALSAM.path[1:], strict=False):
        assert BALSAM.can_move(frm, to)
        if (to, frm) not in states.RESUBMIT_EDGES:
            assert not BALSAM.can_move(to, frm), "states never go backwards"
    assert not BALSAM.can_move("CREATED", "SUBMITTED"), "no skipping"


def test_only_batch_states_return_to_preprocessed_for_a_new_attempt():
    back = {frm for frm in BALSAM.path if BALSAM.can_move(frm, "PREPROCESSED")}
    assert back == {"STAGED_IN", "SUBMITTED", "QUEUED", "RUNNING"}
    assert not BALSAM.can_move("EXECUTION_FINISHED", "PREPROCESSED")


def test_failure_is_named_after_the_state_the_step_tried_to_reach():
    assert BALSAM.can_move("PREPROCESSED", "SUBMITTED_FAILED")
    assert not BALSAM.can_move("PREPROCESSED", "STAGED_IN_FAILED")
    assert BALSAM.can_move("RUNNING", "EXECUTION_FINISHED_FAILED")


def test_terminal_and_failed_states_do_not_move_automatically():
    assert BALSAM.successors("JOB_FINISHED") == ()
    assert not BALSAM.can_move("SUBMITTED_FAILED", "SUBMITTED")
    assert not BALSAM.can_move("JOB_FINISHED", "KILLED")
    assert BALSAM.can_move("RUNNING", "KILLED")


def test_argo_loop_returns_to_submitted_or_completes():
    assert ARGO.can_move("SUBJOB_COMPLETED", "SUBJOB_INCREMENTED")
    assert ARGO.can_move("SUBJOB_INCREMENTED", "SUBJOB_SUBMITTED")
    assert ARGO.can_move("SUBJOB_INCREMENTED", "SUBJOBS_COMPLETED")
    assert not ARGO.can_move("SUBJOB_COMPLETED", "SUBJOBS_COMPLETED")
    assert ARGO.can_move("SUBJOBS_COMPLETED", "STAGED_OUT")
    assert ARGO.can_move("STAGED_OUT", "HISTORY")


def test_walk_lists_intermediate_states_in_order():
    assert states.walk(BALSAM, "SUBMITTED", "EXECUTION_FINISHED") == [
        "QUEUED",
        "RUNNING",
        "EXECUTION_FINISHED",
    ]
    with pytest.raises(ValueError):
        states.walk(BALSAM, "RUNNING", "QUEUED")


@pytest.mark.parametrize(
    ("failed", "restart"),
    [
        ("STAGED_IN_FAILED", "CREATED"),
        ("PREPROCESSED_FAILED", "STAGED_IN"),
        ("SUBMITTED_FAILED", "PREPROCESSED"),
        ("EXECUTION_FINISHED_FAILED", "PREPROCESSED"),
        ("QUEUED_FAILED", "PREPROCESSED"),
        ("POSTPROCESSED_FAILED", "EXECUTION_FINISHED"),
        ("STAGED_OUT_FAILED", "POSTPROCESSED"),
    ],
)
def test_retry_restarts_the_failed_step_and_batch_failures_resubmit(failed, restart):
    assert states.subjob_retry_state(failed) == restart


@pytest.mark.parametrize(
    ("subjob", "argo"),
    [
        ("CREATED", "SUBJOB_SUBMITTED"),
        ("STAGED_IN", "SUBJOB_SUBMITTED"),
        ("PREPROCESSED", "SUBJOB_IN_PREPROCESSED"),
        ("SUBMITTED", "SUBJOB_IN_PREPROCESSED"),
        ("QUEUED", "SUBJOB_QUEUED"),
        ("RUNNING", "SUBJOB_RUNNING"),
        ("EXECUTION_FINISHED", "SUBJOB_RUN_FINISHED"),
        ("POSTPROCESSED", "SUBJOB_IN_POSTPROCESSED"),
        ("STAGED_OUT", "SUBJOB_IN_POSTPROCESSED"),
        ("JOB_FINISHED", "SUBJOB_COMPLETED"),
    ],
)
def test_argo_job_mirrors_its_subjob(subjob, argo):
    assert states.argo_state_for_subjob(subjob) == argo


def test_argo_failure_follows_from_the_state_it_was_in():
    assert states.argo_failure_for("SUBJOB_RUNNING") == "SUBJOB_RUN_FINISHED_FAILED"
    assert states.argo_failure_for("CREATED") == "STAGED_IN_FAILED"


def test_readiness_tells_done_from_waiting_and_stopped():
    step = next_step.SITE_STEPS["site.submit"]
    ready = states.readiness

    assert ready(BALSAM, step.start, step.reaches, "PREPROCESSED") == Readiness.READY
    assert ready(BALSAM, step.start, step.reaches, "RUNNING") == Readiness.DONE
    assert ready(BALSAM, step.start, step.reaches, "STAGED_IN") == Readiness.WAITING
    assert ready(BALSAM, step.start, step.reaches, "SUBMITTED_FAILED") == Readiness.STOPPED
    assert ready(BALSAM, step.start, step.reaches, "KILLED") == Readiness.STOPPED


def test_user_typed_states_are_normalised_and_checked():
    assert BALSAM.normalise("postprocessing") == "POSTPROCESSED"
    assert ARGO.normalise(" history ") == "HISTORY"
    with pytest.raises(ValueError, match="unknown"):
        ARGO.normalise("DONE")
