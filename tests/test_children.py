"""Children spawned by a postprocess (``children.json``), without workers: the ``dag`` API
that writes them, the checks that name each bad field, the adding in the move to
POSTPROCESSED (once, however often the step runs), and a linear job turning into a graph."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import func, select

from edgeceleryapp import applications, dag, graph
from edgeceleryapp.db import read_connection, session_scope
from edgeceleryapp.models import JobEvent, SubJob
from edgeceleryapp.state_store import move_subjob
from tasks import argo as argo_tasks
from tasks import site as site_tasks
from tasks.site_steps import workdir_of
from tests.helpers import (
    SUBJOB_PATH,
    argo,
    balsam_message,
    echo_app,
    input_dir,
    run_to_end,
    script,
    subjob,
)
from workflows.intake import submit_argo, submit_balsam

# --- the API a postprocess calls ---------------------------------------------------------


def test_spawn_child_and_add_dependency_write_the_file_whole(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGECELERY_WORKDIR", str(tmp_path))
    monkeypatch.setenv("EDGECELERY_SUBJOB_NAME", "gen")
    dag.spawn_child("a", "alpha", "echo")
    dag.spawn_child("b", "beta", "echo", parents=["a"], num_nodes=2)
    dag.spawn_child("c", "alpha", "echo")
    dag.add_dependency("b", "c")
    dag.add_dependency("b", "c")  # once only
    dag.spawn_child("a", "alpha", "echo", config_file="a.ini")  # the same name: replaced
    written = json.loads((tmp_path / "children.json").read_text())
    assert written == [
        {"name": "b", "site": "beta", "application": "echo", "num_nodes": 2, "parents": ["a"]},
        {"name": "c", "site": "alpha", "application": "echo", "parents": ["gen", "b"]},
        {"name": "a", "site": "alpha", "application": "echo", "config_file": "a.ini"},
    ]
    assert [p.name for p in tmp_path.iterdir()] == ["children.json"]  # no temporary left
    with pytest.raises(ValueError, match="no child named 'x' was spawned"):
        dag.add_dependency("a", "x")


def test_api_says_where_it_must_run(tmp_path, monkeypatch):
    monkeypatch.delenv("EDGECELERY_WORKDIR", raising=False)
    monkeypatch.delenv("EDGECELERY_SUBJOB_NAME", raising=False)
    with pytest.raises(RuntimeError, match="EDGECELERY_WORKDIR is not set"):
        dag.spawn_child("a", "alpha", "echo")
    dag.spawn_child("a", "alpha", "echo", workdir=tmp_path)
    with pytest.raises(RuntimeError, match="EDGECELERY_SUBJOB_NAME is not set"):
        dag.add_dependency("b", "a", workdir=tmp_path)


def test_api_imports_nothing_of_the_service():
    """A compute node has Python and this one file: only the standard library."""
    source = Path(dag.__file__).read_text()
    imported = {
        line.split()[1].split(".")[0]
        for line in source.splitlines()
        if line.startswith(("import ", "from "))
    }
    assert imported <= {"__future__", "json", "os", "tempfile", "pathlib", "typing"}


# --- spawning through the postprocess step -----------------------------------------------


def spawner_app(env, name: str, body: str) -> None:
    """An application at alpha whose postprocess runs ``body`` (Python, ``dag`` imported)."""
    post = script(env.root / "apps" / name / "post.py", "from edgeceleryapp import dag\n" + body)
    exe = script(env.root / "apps" / name / "app.py", "pass\n")
    applications.add_app(name, "alpha", exe, postprocess=post)


def node(name: str, app: str = "echo", *parents: str, site: str = "alpha") -> dict:
    return {"name": name, "site": site, "application": app, "parents": list(parents)}


def run_to_batch_end(subjob_id: int) -> None:
    """The subjob as the poller leaves it after its batch job: EXECUTION_FINISHED, its work
    directory there."""
    assert move_subjob(subjob_id, "CREATED", SUBJOB_PATH[1:7])
    workdir_of(subjob(subjob_id)).mkdir(parents=True, exist_ok=True)


def by_name(argo_id: int) -> dict[str, SubJob]:
    with session_scope() as s:
        rows = s.scalars(select(SubJob).where(SubJob.argo_job_id == argo_id)).all()
        return {sj.name: sj for sj in rows}


def parents(argo_id: int) -> dict[str, list[str]]:
    jobs = by_name(argo_id)
    names = {sj.id: name for name, sj in jobs.items()}
    with read_connection() as conn:
        edges = graph.parents_of(conn, argo_id)
    return {name: [names[p] for p in edges.get(sj.id, [])] for name, sj in jobs.items()}


def started_graph(env, subjobs: list[dict]) -> int:
    echo_app(env.root, "alpha")
    echo_app(env.root, "beta")
    argo_id = submit_argo({"name": "spawning", "subjobs": subjobs}, start=False)
    argo_tasks.stage_in.apply(args=(argo_id,))
    argo_tasks.advance_task.apply(args=(argo_id,))
    return argo_id


FOUR = """
for i in range(3):
    dag.spawn_child(f"eigen{i}", "beta", "echo")
dag.spawn_child("reduce", "alpha", "echo", parents=[f"eigen{i}" for i in range(3)])
"""


def test_postprocess_adds_children_once(env):
    spawner_app(env, "gen", FOUR)
    argo_id = started_graph(env, [node("gen", "gen"), node("other")])
    gen = by_name(argo_id)["gen"]
    run_to_batch_end(gen.id)
    for _ in range(2):  # the second delivery finds the step done: nothing added twice
        site_tasks.postprocess.apply(args=(gen.id,))
    jobs = by_name(argo_id)
    assert jobs["gen"].state == "POSTPROCESSED"
    assert jobs["gen"].state_message == "spawned 4 children: eigen0, eigen1, eigen2, reduce"
    assert set(jobs) == {"gen", "other", "eigen0", "eigen1", "eigen2", "reduce"}
    assert parents(argo_id)["reduce"] == ["eigen0", "eigen1", "eigen2"]
    assert parents(argo_id)["eigen1"] == ["gen"]
    assert jobs["eigen1"].input_url == jobs["gen"].output_url
    assert (jobs["eigen0"].parents_left, jobs["reduce"].parents_left) == (1, 3)
    shown = argo(argo_id)
    assert (shown.open_subjobs, shown.num_subjobs) == (6, 6)

    # The same postprocess run again (its first worker died before recording the step):
    # its file is written the same, and the move adds nothing a second time.
    site_tasks.execute("postprocess", gen.id)
    assert len(by_name(argo_id)) == 6
    assert move_subjob(gen.id, "POSTPROCESSED", SUBJOB_PATH[8:])
    argo_tasks.advance_task.apply(args=(argo_id,))
    eigens = {n: sj for n, sj in by_name(argo_id).items() if n.startswith("eigen")}
    assert all(sj.dispatched_at is not None for sj in eigens.values())


def failed_with(env, body: str, *more: dict) -> tuple[SubJob, int]:
    spawner_app(env, "gen", body)
    argo_id = started_graph(env, [node("gen", "gen"), *more])
    gen = by_name(argo_id)["gen"]
    run_to_batch_end(gen.id)
    site_tasks.postprocess.apply(args=(gen.id,))
    return subjob(gen.id), argo_id


def count_subjobs(argo_id: int) -> int:
    with read_connection() as conn:
        return conn.execute(
            select(func.count()).select_from(SubJob).where(SubJob.argo_job_id == argo_id)
        ).scalar_one()


def test_unknown_parent_fails_the_postprocess_naming_the_field(env):
    gen, argo_id = failed_with(
        env,
        'dag.spawn_child("a", "alpha", "echo")\n'
        'dag.spawn_child("b", "alpha", "echo", parents=["a", "x"])\n',
    )
    assert gen.state == "POSTPROCESSED_FAILED"
    assert gen.state_message == (
        "children.json[1].parents: names 'x', which is no subjob of this job"
    )
    assert count_subjobs(argo_id) == 1  # nothing half-stored
    assert argo(argo_id).open_subjobs == 1


@pytest.mark.parametrize(
    ("content", "field", "problem"),
    [
        ('{"name": "a"}', "children.json", "must be a JSON list of subjob messages"),
        ("[{", "children.json", "not valid JSON"),
        (
            '[{"name": "a", "site": "alpha", "application": "echo", "nodes": 2}]',
            "children.json[0].nodes",
            "unknown field; did you mean 'num_nodes'?",
        ),
        (
            '[{"name": "a", "site": "alpha", "application": "rm"}]',
            "children.json[0].application",
            "'rm' is not registered at site 'alpha'",
        ),
        (
            '[{"name": "a", "site": "nowhere", "application": "echo"}]',
            "children.json[0].site",
            "no site named 'nowhere' is configured",
        ),
        (
            '[{"name": "a", "site": "alpha", "application": "echo", "parents": ["b"]},'
            ' {"name": "b", "site": "alpha", "application": "echo", "parents": ["a"]}]',
            "children.json[0].parents",
            "makes a cycle: a -> b -> a",
        ),
        (
            '[{"name": "gen", "site": "alpha", "application": "echo"}]',
            "children.json[0].name",
            "'gen' is the name of an existing subjob",
        ),
    ],
    ids=[
        "not-a-list",
        "not-json",
        "unknown-field",
        "not-whitelisted",
        "unknown-site",
        "cycle",
        "taken-name",
    ],
)
def test_bad_children_json_names_the_problem(env, content, field, problem):
    gen, argo_id = failed_with(env, f"open('children.json', 'w').write({content!r})\n")
    assert gen.state == "POSTPROCESSED_FAILED"
    assert gen.state_message.startswith(f"{field}: ")
    assert problem in gen.state_message
    assert count_subjobs(argo_id) == 1


def test_size_limit_counts_the_children(env, monkeypatch):
    monkeypatch.setattr(graph, "max_subjobs", lambda: 3)
    gen, _ = failed_with(env, FOUR)
    assert gen.state_message == (
        "children.json: makes 5 subjobs; a job may have at most 3 (argo.max_subjobs)"
    )


def test_a_link_is_not_followed(env, tmp_path):
    secret = tmp_path / "elsewhere.json"
    secret.write_text("[]")
    gen, _ = failed_with(env, f"import os\nos.symlink({str(secret)!r}, 'children.json')\n")
    assert gen.state_message == "children.json: is a symbolic link; write the file itself"


def test_linear_job_becomes_a_graph_when_a_subjob_spawns(env):
    spawner_app(env, "gen", 'dag.spawn_child("extra", "beta", "echo")\n')
    echo_app(env.root, "alpha")
    echo_app(env.root, "beta")
    line = [
        {"name": "first", "site": "alpha", "application": "echo"},
        {"name": "gen", "site": "alpha", "application": "gen"},
        {"name": "last", "site": "beta", "application": "echo"},
    ]
    argo_id = submit_argo({"name": "line", "subjobs": line}, start=False)
    argo_tasks.stage_in.apply(args=(argo_id,))
    argo_tasks.advance_task.apply(args=(argo_id,))
    jobs = by_name(argo_id)
    assert move_subjob(jobs["first"].id, "CREATED", SUBJOB_PATH[1:])
    argo_tasks.advance_task.apply(args=(argo_id,))
    assert argo(argo_id).state == "SUBJOB_SUBMITTED" and argo(argo_id).current_subjob == 1
    run_to_batch_end(jobs["gen"].id)
    site_tasks.postprocess.apply(args=(jobs["gen"].id,))

    now = argo(argo_id)
    assert (now.state, now.graph, now.open_subjobs, now.stuck_subjobs) == (
        "SUBJOBS_RUNNING",
        True,
        3,
        0,
    )
    assert "subjob gen spawned 1 children" in now.state_message
    assert parents(argo_id) == {
        "first": [],
        "gen": ["first"],
        "last": ["gen"],
        "extra": ["gen"],
    }
    with read_connection() as conn:
        argo_moves = conn.execute(
            select(JobEvent.to_state)
            .where(JobEvent.argo_job_id == argo_id, JobEvent.subjob_id.is_(None))
            .order_by(JobEvent.id)
        ).scalars()
        assert list(argo_moves)[-3:] == [
            "SUBJOB_RUN_FINISHED",
            "SUBJOB_IN_POSTPROCESSED",
            "SUBJOBS_RUNNING",
        ]
    jobs = by_name(argo_id)
    assert jobs["last"].input_url == jobs["gen"].output_url == jobs["extra"].input_url

    # The rest runs as a graph: last and extra together after gen, then the job completes.
    assert move_subjob(jobs["gen"].id, "POSTPROCESSED", SUBJOB_PATH[8:])
    argo_tasks.advance_task.apply(args=(argo_id,))
    jobs = by_name(argo_id)
    assert jobs["last"].dispatched_at is not None and jobs["extra"].dispatched_at is not None
    for name in ("last", "extra"):
        assert move_subjob(jobs[name].id, "CREATED", SUBJOB_PATH[1:])
    assert argo(argo_id).state == "SUBJOBS_COMPLETED"


def test_linear_job_with_shared_names_cannot_take_children(env):
    spawner_app(env, "gen", 'dag.spawn_child("extra", "alpha", "echo")\n')
    echo_app(env.root, "alpha")
    line = [{"name": "step", "site": "alpha", "application": n} for n in ("gen", "echo", "echo")]
    argo_id = submit_argo({"name": "line", "subjobs": line}, start=False)
    argo_tasks.stage_in.apply(args=(argo_id,))
    argo_tasks.advance_task.apply(args=(argo_id,))
    first = min(by_name_all(argo_id))
    run_to_batch_end(first)
    site_tasks.postprocess.apply(args=(first,))
    failed = subjob(first)
    assert failed.state == "POSTPROCESSED_FAILED"
    assert "each subjob's name must be unique" in failed.state_message
    assert "shared: 'step'" in failed.state_message
    assert not argo(argo_id).graph and count_subjobs(argo_id) == 3


def by_name_all(argo_id: int) -> list[int]:
    with read_connection() as conn:
        return list(conn.execute(select(SubJob.id).where(SubJob.argo_job_id == argo_id)).scalars())


def test_children_json_arriving_with_the_input_is_set_aside(env):
    """A child's input is its parent's output, children.json and all: that file is the
    parent's, so this subjob's postprocess must not spawn its children again."""
    echo_app(env.root, "alpha")
    inherited = '[{"name": "x", "site": "alpha", "application": "echo"}]'
    sid = submit_balsam(
        balsam_message(input_url=input_dir(env, {"children.json": inherited, "a.txt": "a"})),
        start=False,
    )
    finished = run_to_end(sid)
    assert finished.state == "JOB_FINISHED"
    workdir = workdir_of(finished)
    assert not (workdir / "children.json").exists()
    assert (workdir / ".edgecelery" / "children.inherited.json").read_text() == inherited
    assert (workdir / "a.txt").read_text() == "a"
