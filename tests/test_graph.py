"""Graph jobs without workers: the checks on ``parents``, and the bookkeeping that makes
subjobs ready, blocks the descendants of a failed one and ends the Argo job, driven through
the real steps' functions and moves on the database."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from edgeceleryapp import graph, job_control, states
from edgeceleryapp.db import read_connection, session_scope
from edgeceleryapp.errors import ValidationFailed
from edgeceleryapp.models import SubJob
from edgeceleryapp.state_store import move_subjob, transaction
from tasks import argo as argo_tasks
from tests.helpers import SUBJOB_PATH, argo
from workflows.intake import checked_argo, checked_balsam, submit_argo
from workflows.schemas import BalsamJobMessage


def sub(name: str, *parents: str, site: str = "alpha") -> dict:
    return {"name": name, "site": site, "application": "echo", "parents": list(parents)}


def diamond(**fields: object) -> dict:
    """gen at alpha; left at alpha and right at beta read its output; join reads both."""
    return {
        "name": "diamond",
        "subjobs": [
            sub("gen"),
            sub("left", "gen"),
            sub("right", "gen", site="beta"),
            sub("join", "left", "right"),
        ],
        **fields,
    }


def problems_of(message: dict) -> dict[str, str]:
    with pytest.raises(ValidationFailed) as caught:
        checked_argo(message)
    return dict(caught.value.errors)


def test_refusals_name_the_field(env):
    unknown = problems_of({"name": "g", "subjobs": [sub("a"), sub("b", "nope")]})
    assert "names 'nope', which is no subjob" in unknown["subjobs[1].parents"]
    itself = problems_of({"name": "g", "subjobs": [sub("a", "a")]})
    assert "names the subjob itself" in itself["subjobs[0].parents"]
    cycle = problems_of(
        {"name": "g", "subjobs": [sub("r"), sub("a", "c"), sub("b", "a"), sub("c", "b")]}
    )
    assert cycle == {"subjobs[1].parents": "makes a cycle: a -> c -> b -> a"}
    twice = problems_of({"name": "g", "subjobs": [sub("a"), sub("a"), sub("b", "a")]})
    assert "'a' is the name of subjobs[0] too" in twice["subjobs[1].name"]
    folder = problems_of({"name": "g", "subjobs": [sub("a/b"), sub("c", "a/b")]})
    assert "folder name" in folder["subjobs[0].name"]


def test_size_limit_is_the_setting(env):
    many = {"name": "wide", "subjobs": [sub(f"s{i}") for i in range(1001)]}
    assert "at most 1000 (argo.max_subjobs)" in problems_of(many)["subjobs"]


def test_linear_job_may_repeat_names_and_balsam_job_has_no_parents(env):
    linear = {"name": "l", "subjobs": [{"name": "x", "site": "alpha", "application": "echo"}] * 2}
    assert len(checked_argo(linear).subjobs) == 2
    with pytest.raises(ValidationFailed) as caught:
        checked_balsam({"name": "b", "site": "alpha", "application": "echo", "parents": []})
    assert dict(caught.value.errors) == {"parents": "only a subjob of an Argo job may name parents"}


def test_cycle_search_is_iterative_and_layers_put_parents_above():
    names = [f"n{i}" for i in range(5000)]
    chain = [[names[i - 1]] if i else [] for i in range(5000)]
    assert graph._cycle(names, chain) is None
    chain[0] = [names[-1]]
    assert len(graph._cycle(names, chain) or []) == 5000
    depth = graph.layers({"gen": [], "left": ["gen"], "right": ["gen"], "join": ["left", "right"]})
    assert depth == {"gen": 0, "left": 1, "right": 1, "join": 2}


def by_name(argo_id: int) -> dict[str, SubJob]:
    with session_scope() as s:
        rows = s.scalars(select(SubJob).where(SubJob.argo_job_id == argo_id)).all()
        return {sj.name: sj for sj in rows}


def started(argo_id: int) -> set[str]:
    """The subjobs argo.advance has sent their first run (claimed)."""
    return {name for name, sj in by_name(argo_id).items() if sj.dispatched_at is not None}


def finish(subjob: SubJob) -> None:
    assert move_subjob(subjob.id, "CREATED", SUBJOB_PATH[1:])


def start(env) -> int:
    argo_id = submit_argo(diamond(), start=False)
    argo_tasks.stage_in.apply(args=(argo_id,))
    argo_tasks.advance_task.apply(args=(argo_id,))
    return argo_id


def test_diamond_runs_branches_together_and_the_join_after_both(env):
    argo_id = start(env)
    assert argo(argo_id).state == "SUBJOBS_RUNNING"
    assert started(argo_id) == {"gen"}
    jobs = by_name(argo_id)
    assert jobs["right"].input_url == jobs["gen"].output_url
    assert jobs["join"].input_url is None  # it fetches each parent's output into its folder
    finish(jobs["gen"])
    for _ in range(2):  # a second advance sends nothing twice
        argo_tasks.advance_task.apply(args=(argo_id,))
    assert started(argo_id) == {"left", "right"}  # gen moved on: no longer CREATED
    finish(jobs["left"])
    argo_tasks.advance_task.apply(args=(argo_id,))
    assert by_name(argo_id)["join"].parents_left == 1
    assert "join" not in started(argo_id)
    finish(jobs["right"])
    argo_tasks.advance_task.apply(args=(argo_id,))
    assert started(argo_id) == {"join"}
    finish(jobs["join"])
    assert argo(argo_id).state == "SUBJOBS_COMPLETED"
    argo_tasks.advance_task.apply(args=(argo_id,))
    argo_tasks.stage_out.apply(args=(argo_id,))
    argo_tasks.finish.apply(args=(argo_id,))
    assert argo(argo_id).state == "HISTORY"
    with read_connection() as conn:
        assert graph.parent_outputs(conn, jobs["join"].id) == [
            ("left", jobs["left"].output_url),
            ("right", jobs["right"].output_url),
        ]


def test_failure_blocks_descendants_and_retry_reruns_only_them(env):
    argo_id = start(env)
    jobs = by_name(argo_id)
    finish(jobs["gen"])
    assert move_subjob(jobs["left"].id, "CREATED", ["STAGED_IN"])
    assert move_subjob(
        jobs["left"].id, "STAGED_IN", ["PREPROCESSED_FAILED"], "application exited with code 1"
    )
    now = by_name(argo_id)
    assert now["join"].state == states.BLOCKED
    assert now["join"].state_message == "parent left failed: application exited with code 1"
    assert argo(argo_id).state == "SUBJOBS_RUNNING"  # right may still run
    finish(jobs["right"])
    failed = argo(argo_id)
    assert failed.state == "SUBJOBS_COMPLETED_FAILED"
    assert failed.state_message == "failed: left; nothing more can run"
    finished_at = by_name(argo_id)["gen"].updated_at

    assert job_control.retry_argo(argo_id) == "SUBJOBS_RUNNING"
    again = by_name(argo_id)
    assert again["left"].state == "STAGED_IN" and again["join"].state == "CREATED"
    assert again["gen"].updated_at == finished_at and again["right"].state == "JOB_FINISHED"
    assert move_subjob(again["left"].id, "STAGED_IN", SUBJOB_PATH[2:])
    argo_tasks.advance_task.apply(args=(argo_id,))
    assert started(argo_id) == {"join"}
    finish(again["join"])
    assert argo(argo_id).state == "SUBJOBS_COMPLETED"


def test_cancel_kills_every_branch(env):
    argo_id = start(env)
    finish(by_name(argo_id)["gen"])
    job_control.cancel_argo(argo_id)
    assert {sj.state for name, sj in by_name(argo_id).items() if name != "gen"} == {"KILLED"}
    assert argo(argo_id).state == "KILLED"


def test_children_added_to_a_running_graph(env):
    argo_id = start(env)
    jobs = by_name(argo_id)
    finish(jobs["gen"])
    more = [
        BalsamJobMessage(name="eigen", site="alpha", application="echo", parents=["gen"]),
        BalsamJobMessage(name="reduce", site="beta", application="echo", parents=["eigen", "join"]),
    ]
    with transaction() as tx:
        ids = graph.add_subjobs(tx, argo_id, more)
    now = by_name(argo_id)
    assert [now["eigen"].id, now["reduce"].id] == ids
    assert (now["eigen"].parents_left, now["reduce"].parents_left) == (0, 2)
    assert now["eigen"].input_url == jobs["gen"].output_url
    with pytest.raises(ValidationFailed) as caught, transaction() as tx:
        graph.add_subjobs(
            tx, argo_id, [BalsamJobMessage(name="gen", site="alpha", application="echo")]
        )
    assert "subjobs" not in dict(caught.value.errors)
    assert (
        "'gen' is the name of an existing subjob" in dict(caught.value.errors)["children[0].name"]
    )
    argo_tasks.advance_task.apply(args=(argo_id,))
    assert {"left", "right", "eigen"} <= started(argo_id)
