"""What a job is owed next (edgeceleryapp.next_step): pure answers from states, checked against
the order of steps the HUST'17 paper gives (Figure 4's loop) without a database or broker."""

from __future__ import annotations

import pytest

from edgeceleryapp import next_step, states
from edgeceleryapp.next_step import DONE, PARKED, STEP, STOPPED, Record
from tests.helpers import SUBJOB_PATH


def subjob(state: str, argo: int | None = 7) -> Record:
    return Record(3, state, site="mira", argo_job_id=argo)


@pytest.mark.parametrize(
    ("state", "steps"),
    [
        ("CREATED", ("site.stage_in", "site.preprocess", "site.submit")),
        ("STAGED_IN", ("site.preprocess", "site.submit")),
        ("PREPROCESSED", ("site.submit",)),
        ("EXECUTION_FINISHED", ("site.postprocess", "site.stage_out", "argo.advance")),
        ("POSTPROCESSED", ("site.stage_out", "argo.advance")),
    ],
)
def test_a_subjob_is_owed_its_step_and_the_rest_of_that_chain(state, steps):
    owed = next_step.for_subjob(subjob(state))
    assert (owed.verdict, owed.steps) == (STEP, steps)
    assert (owed.subjob_id, owed.site, owed.argo_id) == (3, "mira", 7)


def test_a_balsam_only_job_ends_with_its_subjob():
    owed = next_step.for_subjob(subjob("EXECUTION_FINISHED", argo=None))
    assert owed.steps == ("site.postprocess", "site.stage_out")
    assert next_step.for_subjob(subjob("JOB_FINISHED", argo=None)).verdict == DONE


@pytest.mark.parametrize("state", ["SUBMITTED", "QUEUED", "RUNNING"])
def test_a_subjob_with_a_batch_job_in_flight_is_parked(state):
    owed = next_step.for_subjob(subjob(state))
    assert (owed.verdict, owed.steps) == (PARKED, ())
    assert "in flight" in owed.reason


@pytest.mark.parametrize("state", ["SUBMITTED_FAILED", "STAGED_IN_FAILED", "KILLED"])
def test_a_failed_or_killed_subjob_is_stopped(state):
    owed = next_step.for_subjob(subjob(state))
    assert owed.verdict == STOPPED and state in owed.reason


def test_every_state_has_an_answer():
    """What a sweep over every record asks: no state is left without one."""
    for state in states.ARGO.states:
        inside = [subjob(s) for s in SUBJOB_PATH]
        assert next_step.for_argo(Record(7, state, current_subjob=2), inside[2]).verdict
    verdicts = {s: next_step.for_subjob(subjob(s)).verdict for s in states.BALSAM.states}
    assert [s for s, v in verdicts.items() if v == STEP] == [
        "CREATED",
        "STAGED_IN",
        "PREPROCESSED",
        "EXECUTION_FINISHED",
        "POSTPROCESSED",
    ]
    assert verdicts["JOB_FINISHED"] == DONE
    assert verdicts["STAGED_OUT"] == STOPPED, "stage_out passes it within one transaction"


def test_a_caller_may_ask_for_the_state_it_is_about_to_commit():
    """The poller asks what a subjob it has just moved to EXECUTION_FINISHED is owed, from
    the row it read before the move."""
    owed = next_step.for_subjob(subjob("RUNNING"), state="EXECUTION_FINISHED")
    assert owed.step == "site.postprocess"


POST, OUT = "site.postprocess", "site.stage_out"


@pytest.mark.parametrize(
    ("argo", "with_work", "path", "verdict", "steps"),
    [
        # Nothing to do after the run: every state walked at once, the Argo job's move owed.
        (7, set(), ["POSTPROCESSED", "STAGED_OUT", "JOB_FINISHED"], STEP, ("argo.advance",)),
        (None, set(), ["POSTPROCESSED", "STAGED_OUT", "JOB_FINISHED"], DONE, ()),
        # An output to stage out: postprocess passed, stage out sent.
        (7, {OUT}, ["POSTPROCESSED"], STEP, (OUT, "argo.advance")),
        (None, {OUT}, ["POSTPROCESSED"], STEP, (OUT,)),
        # A postprocess with work: nothing passed, the whole run sent as before.
        (7, {POST}, [], STEP, (POST, OUT, "argo.advance")),
        (None, {POST, OUT}, [], STEP, (POST, OUT)),
    ],
)
def test_the_steps_after_a_run_with_nothing_to_do_are_passed(argo, with_work, path, verdict, steps):
    passed, owed = next_step.after_batch_end(subjob("RUNNING", argo=argo), with_work)
    assert passed == path
    assert (owed.verdict, owed.steps) == (verdict, steps)
    assert owed.argo_id == argo
    for frm, to in zip(["EXECUTION_FINISHED", *passed], passed, strict=False):
        assert states.BALSAM.can_move(frm, to)


@pytest.mark.parametrize(
    ("state", "steps"),
    [
        ("CREATED", ("argo.stage_in", "argo.advance")),
        ("STAGED_IN", ("argo.advance",)),
        ("SUBJOB_COMPLETED", ("argo.advance",)),
        ("SUBJOB_INCREMENTED", ("argo.advance",)),
        ("SUBJOBS_COMPLETED", ("argo.stage_out", "argo.finish")),
        ("STAGED_OUT", ("argo.finish",)),
    ],
)
def test_an_argo_job_is_owed_its_own_steps_outside_the_loop(state, steps):
    owed = next_step.for_argo(Record(7, state), None)
    assert (owed.verdict, owed.steps, owed.argo_id) == (STEP, steps, 7)


def test_inside_the_loop_an_argo_job_is_owed_what_its_current_subjob_is():
    second = Record(2, "STAGED_IN", "b", 7)
    owed = next_step.for_argo(Record(7, "SUBJOB_SUBMITTED", current_subjob=1), second)
    assert (owed.steps[0], owed.subjob_id, owed.site) == ("site.preprocess", 2, "b")
    parked = next_step.for_argo(Record(7, "SUBJOB_RUNNING", current_subjob=1), subjob("RUNNING"))
    assert parked.verdict == PARKED


def test_an_argo_job_ends_done_or_stopped():
    assert next_step.for_argo(Record(7, "HISTORY"), None).verdict == DONE
    assert next_step.for_argo(Record(7, "SUBJOB_RUN_FINISHED_FAILED"), None).verdict == STOPPED
    assert next_step.for_argo(Record(7, "KILLED"), None).verdict == STOPPED


@pytest.mark.parametrize(
    ("state", "current", "moves"),
    [
        ("STAGED_IN", 0, (["SUBJOB_SUBMITTED"], 0)),
        ("SUBJOB_COMPLETED", 0, (["SUBJOB_INCREMENTED", "SUBJOB_SUBMITTED"], 1)),
        ("SUBJOB_COMPLETED", 1, (["SUBJOB_INCREMENTED", "SUBJOBS_COMPLETED"], 2)),
        ("SUBJOB_INCREMENTED", 1, (["SUBJOB_SUBMITTED"], 1)),
        ("SUBJOB_INCREMENTED", 2, (["SUBJOBS_COMPLETED"], 2)),
        ("SUBJOB_RUNNING", 0, None),
    ],
)
def test_advance_follows_figure_4s_loop(state, current, moves):
    assert next_step.advance_moves(state, current, subjobs=2) == moves
    if moves:
        path, _ = moves
        assert all(states.ARGO.can_move(a, b) for a, b in zip([state, *path], path, strict=False))


def test_a_step_that_cannot_be_sent_fails_to_the_state_it_was_moving_to():
    assert next_step.for_argo(Record(7, "CREATED"), None).fails_to == "STAGED_IN_FAILED"
    assert next_step.for_subjob(subjob("CREATED")).fails_to == "STAGED_IN_FAILED"
    assert next_step.for_subjob(subjob("POSTPROCESSED")).fails_to == "STAGED_OUT_FAILED"
    with pytest.raises(ValueError, match="parked"):
        _ = next_step.for_subjob(subjob("RUNNING")).fails_to
