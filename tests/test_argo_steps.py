"""The Argo steps run directly (no broker): twice in a row and concurrently, one effect."""

from __future__ import annotations

from edgeceleryapp.state_store import move_subjob
from tasks import argo as argo_tasks
from tests.helpers import ARGO_LOOP, SUBJOB_PATH, argo, argo_message, argo_states, at_once
from workflows.intake import submit_argo


def two_subjob_job(env, **fields) -> int:
    """An Argo job with a subjob at alpha then one at beta, not started."""
    return submit_argo(argo_message("twice", **fields), start=False)


def finish_subjob(subjob_id: int) -> None:
    """Walk a new subjob to JOB_FINISHED as its site would (the Argo job mirrors it)."""
    assert move_subjob(subjob_id, "CREATED", SUBJOB_PATH[1:])


def test_argo_steps_twice_in_a_row_make_one_pass_through_the_loop(env):
    inp = env.data / "in"
    inp.mkdir()
    (inp / "x.dat").write_text("data")
    argo_id = two_subjob_job(
        env, input_url=f"local://{inp}", output_url=f"local://{env.data / 'out'}"
    )
    for _ in range(2):
        argo_tasks.stage_in.apply(args=(argo_id,))
    for _ in range(2):
        argo_tasks.advance_task.apply(args=(argo_id,))
    first, second = argo_tasks.load(argo_id)[1]
    finish_subjob(first.id)
    for _ in range(2):
        argo_tasks.advance_task.apply(args=(argo_id,))
    finish_subjob(second.id)
    for _ in range(2):
        argo_tasks.advance_task.apply(args=(argo_id,))
    for _ in range(2):
        argo_tasks.stage_out.apply(args=(argo_id,))
        argo_tasks.finish.apply(args=(argo_id,))
    assert argo_states(argo_id) == [
        "CREATED",
        "STAGED_IN",
        *ARGO_LOOP,
        *ARGO_LOOP,
        "SUBJOBS_COMPLETED",
        "STAGED_OUT",
        "HISTORY",
    ]
    assert argo(argo_id).current_subjob == 2


def test_concurrent_advances_increment_once(env):
    argo_id = two_subjob_job(env)
    argo_tasks.stage_in.apply(args=(argo_id,))
    argo_tasks.advance_task.apply(args=(argo_id,))
    finish_subjob(argo_tasks.load(argo_id)[1][0].id)
    at_once(4, lambda _i: argo_tasks.advance(argo_id))
    job = argo(argo_id)
    assert job.current_subjob == 1
    assert job.state == "SUBJOB_SUBMITTED"
    assert argo_states(argo_id).count("SUBJOB_INCREMENTED") == 1


def test_argo_stage_in_of_a_missing_input_fails_with_the_reason(env):
    argo_id = two_subjob_job(env, input_url=f"local://{env.data / 'missing'}")
    argo_tasks.stage_in.apply(args=(argo_id,))
    job = argo(argo_id)
    assert job.state == "STAGED_IN_FAILED"
    assert "no such file or directory" in job.state_message
