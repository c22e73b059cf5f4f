"""Graph jobs through the real service: Redis, the Argo worker and a worker for each of two
sites, one deployment for the module. A diamond across the sites (its branches run at once,
the join after both, reading each branch's output from a folder named after it), a failed
branch blocking what depends on it, the retry of that branch alone, the cancel of a
running graph, and children spawned at run time (the parent / eigen / reduce example of
examples/spawning/, and a bad children.json)."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path

import pytest

from backends.batchscript import alive
from backends.schedulers.local import MARK
from edgeceleryapp import applications
from edgeceleryapp.devstack import wait_for
from tests.helpers import SUBJOB_PATH, batch_name, echo_app, script, state_changes
from tests.integration.conftest import Deployment, running_deployment

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "spawning"

pytestmark = pytest.mark.integration

SITES = ("alpha", "beta")


@pytest.fixture(scope="module")
def dep(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    root = tmp_path_factory.mktemp("graph")
    with running_deployment(root, SITES, concurrency=2) as running:
        for site in SITES:
            echo_app(running.root, site, name="echo")
        yield running


def meeting_app(dep: Deployment, name: str, parties: int = 2) -> None:
    """An application at both sites that exits 0 only if ``parties`` runs of it are under way
    at once: each leaves a mark and waits (at most 30 s) for the others'. Run one after the
    other, it exits 3."""
    room = dep.data / f"{name}-room"
    room.mkdir(parents=True)
    exe = script(
        dep.root / "apps" / name / "app.py",
        f"""
        import os, sys, time
        room = {str(room)!r}
        open(os.path.join(room, str(os.getpid())), "w").close()
        deadline = time.monotonic() + 30
        while len(os.listdir(room)) < {parties} and time.monotonic() < deadline:
            time.sleep(0.05)
        open("result.txt", "w").write("met\\n")
        sys.exit(0 if len(os.listdir(room)) >= {parties} else 3)
        """,
    )
    for site in SITES:
        applications.add_app(name, site, exe)


def flag_app(dep: Deployment, name: str, flag: Path, wait: bool) -> None:
    """At both sites: ``wait``: runs until ``flag`` exists (60 s at most), else exits 7
    unless ``flag`` exists. Each run is logged in ``<name>.log`` in its work directory,
    each end in ``<name>.done``."""
    body = (
        f"while not os.path.exists({str(flag)!r}) and time.monotonic() < deadline:\n"
        "            time.sleep(0.05)\n"
        if wait
        else ""
    )
    exe = script(
        dep.root / "apps" / name / "app.py",
        f"""
        import os, sys, time
        open({name + ".log"!r}, "a").write("run\\n")
        deadline = time.monotonic() + 60
        {body}
        open({name + ".done"!r}, "w").write("done\\n")
        sys.exit(0 if os.path.exists({str(flag)!r}) else 7)
        """,
    )
    for site in SITES:
        applications.add_app(name, site, exe)


def node(name: str, site: str, app: str, *parents: str) -> dict:
    return {"name": name, "site": site, "application": app, "parents": list(parents)}


def diamond(name: str, branch_app: str) -> dict:
    return {
        "name": name,
        "subjobs": [
            node("gen", "alpha", "echo"),
            node("left", "alpha", branch_app, "gen"),
            node("right", "beta", branch_app, "gen"),
            node("join", "beta", "echo", "left", "right"),
        ],
    }


def by_name(shown: dict) -> dict[str, dict]:
    return {sj["name"]: sj for sj in shown["subjobs"]}


def first_event(shown: dict, subjob_id: int, state: str) -> int:
    return next(
        e["id"] for e in shown["events"] if e["subjob_id"] == subjob_id and e["to_state"] == state
    )


ENDS = {"HISTORY", "SUBJOBS_COMPLETED_FAILED", "KILLED", "STAGED_IN_FAILED"}


def test_diamond_branches_run_at_once_and_the_join_reads_both(dep):
    meeting_app(dep, "meet")
    argo_id = dep.submit(diamond("diamond", "meet"))
    final = dep.wait_state(argo_id, ENDS, 90)
    assert final["state"] == "HISTORY", final
    jobs = by_name(final)
    assert jobs["join"]["parents"] == ["left", "right"]
    for sj in jobs.values():
        assert state_changes(final["events"], sj["id"]) == SUBJOB_PATH
    left, right, join = jobs["left"]["id"], jobs["right"]["id"], jobs["join"]["id"]
    both_submitted = max(first_event(final, s, "SUBMITTED") for s in (left, right))
    either_finished = min(first_event(final, s, "EXECUTION_FINISHED") for s in (left, right))
    assert both_submitted < either_finished, "the branches' batch jobs were out together"
    both_done = max(first_event(final, s, "JOB_FINISHED") for s in (left, right))
    assert first_event(final, join, "STAGED_IN") > both_done, "the join after both"
    workdir = Path(jobs["join"]["workdir"])
    for branch in ("left", "right"):
        assert (workdir / branch / "result.txt").read_text() == "met\n"
    argo_moves = [e["to_state"] for e in final["events"] if e["subjob_id"] is None]
    assert argo_moves == [
        "CREATED",
        "STAGED_IN",
        "SUBJOBS_RUNNING",
        "SUBJOBS_COMPLETED",
        "STAGED_OUT",
        "HISTORY",
    ]
    text = dep.cli("argo", "show", str(argo_id))
    assert "join id=" in text and "parents=left,right" in text


def test_failed_branch_blocks_the_join_then_retry_reruns_only_it(dep):
    flag = dep.data / "flaky-fixed"
    flag_app(dep, "flaky", flag, wait=False)
    argo_id = dep.submit(diamond("failing", "flaky"))
    failed = dep.wait_state(argo_id, ENDS, 90)
    assert failed["state"] == "SUBJOBS_COMPLETED_FAILED", failed
    jobs = by_name(failed)
    assert jobs["left"]["state"] == jobs["right"]["state"] == "EXECUTION_FINISHED_FAILED"
    assert jobs["join"]["state"] == "BLOCKED"
    first = jobs["join"]["state_message"].split(" failed: ")[0]
    assert first in ("parent left", "parent right"), "whichever branch failed first"
    assert "exited with code 7" in jobs["join"]["state_message"]
    assert "nothing more can run" in failed["state_message"]
    gen_events = state_changes(failed["events"], jobs["gen"]["id"])

    flag.write_text("")
    restarted = json.loads(dep.cli("argo", "retry", str(argo_id), "--json"))
    assert restarted["state"] == "SUBJOBS_RUNNING"
    final = dep.wait_state(argo_id, ENDS, 90)
    assert final["state"] == "HISTORY", final
    jobs = by_name(final)
    assert state_changes(final["events"], jobs["gen"]["id"]) == gen_events == SUBJOB_PATH
    for branch in ("left", "right"):
        assert jobs[branch]["attempt"] == 2
        runs = Path(jobs[branch]["workdir"]) / "flaky.log"
        assert runs.read_text() == "run\nrun\n"
    assert state_changes(final["events"], jobs["join"]["id"]) == [
        "CREATED",
        "BLOCKED",
        "CREATED",
        *SUBJOB_PATH[1:],
    ]


def test_one_failed_branch_lets_the_other_finish(dep):
    flag = dep.data / "never"
    flag_app(dep, "broken", flag, wait=False)
    go = dep.data / "right-may-end"
    flag_app(dep, "slow", go, wait=True)
    message = diamond("half", "slow")
    message["subjobs"][1]["application"] = "broken"
    argo_id = dep.submit(message)

    def left_failed() -> bool:
        return by_name(dep.show(argo_id))["left"]["state"] == "EXECUTION_FINISHED_FAILED"

    wait_for(left_failed, 60, "the left branch to fail", 0.2)
    go.touch()  # the right branch ends after the failure: the job waits for it
    final = dep.wait_state(argo_id, ENDS, 90)
    assert final["state"] == "SUBJOBS_COMPLETED_FAILED", final
    jobs = by_name(final)
    assert jobs["right"]["state"] == "JOB_FINISHED"
    assert jobs["left"]["state"] == "EXECUTION_FINISHED_FAILED"
    assert jobs["join"]["state"] == "BLOCKED"
    assert final["state_message"] == "failed: left; nothing more can run"


def test_cancel_stops_every_branch(dep):
    flag = dep.data / "never-go"
    flag_app(dep, "hold", flag, wait=True)
    argo_id = dep.submit(diamond("held", "hold"))

    def both_running() -> dict | None:
        shown = by_name(dep.show(argo_id))
        ok = all(shown[b]["state"] in ("QUEUED", "RUNNING") for b in ("left", "right"))
        return shown if ok else None

    wait_for(both_running, 60, "both branches' batch jobs", 0.2)
    dep.cli("argo", "cancel", str(argo_id))
    final = dep.wait_state(argo_id, {"KILLED"}, 30)
    jobs = by_name(final)
    assert {sj["state"] for name, sj in jobs.items() if name != "gen"} == {"KILLED"}

    def batch_jobs_gone() -> bool:
        return not any(
            alive(dep.root / "sites" / jobs[b]["site"] / ".local-scheduler" / f"{name}.pid", MARK)
            for b in ("left", "right")
            for name in [batch_name(jobs[b]["id"])]
        )

    wait_for(batch_jobs_gone, 30, "the branches' batch jobs to be cancelled", 0.2)
    for branch in ("left", "right"):
        assert not (Path(jobs[branch]["workdir"]) / "hold.done").exists()


def example_app(dep: Deployment, name: str, site: str, **scripts: str) -> None:
    """Register examples/spawning/<name>.py at ``site``, each script run by this interpreter
    (the examples' own text; spawn.py told the test's sites)."""
    made = {}
    for role, file in {"executable": name, **scripts}.items():
        text = (EXAMPLE / f"{file}.py").read_text()
        if file == "spawn":
            assert 'SITES = ["theta"]' in text
            text = text.replace('SITES = ["theta"]', 'SITES = ["alpha", "beta"]')
        made[role] = script(dep.root / "apps" / "spawning" / f"{file}.py", text)
    applications.add_app(name, site, made.pop("executable"), **made)


def largest_eigenvalue(matrix: list[list[int]]) -> float:
    """Of a symmetric 2x2 matrix, in closed form (not the example's power iteration)."""
    (a, b), (_, c) = matrix
    return (a + c) / 2 + math.sqrt(((a - c) / 2) ** 2 + b * b)


def test_parent_spawns_eigen_children_and_a_reduce(dep):
    """Balsam's parent / eigen / reduce: a linear job of one subjob, gen, whose postprocess
    spawns an eigen job per matrix (across both sites) and a reduce after all of them; the
    job turns into a graph and runs them."""
    example_app(dep, "gen", "alpha", postprocess="spawn")
    for site in SITES:
        example_app(dep, "eigen", site, config_script="eigen_args")
    example_app(dep, "reduce", "alpha")
    message = json.loads((EXAMPLE.parent / "jobs" / "argo-spawning.json").read_text())
    message["subjobs"][0]["site"] = "alpha"
    argo_id = dep.submit(message)
    final = dep.wait_state(argo_id, ENDS, 120)
    assert final["state"] == "HISTORY", final
    jobs = by_name(final)
    eigens = [f"eigen{i}" for i in range(4)]
    assert set(jobs) == {"gen", *eigens, "reduce"}
    assert jobs["reduce"]["parents"] == eigens
    assert {jobs[e]["site"] for e in eigens} == {"alpha", "beta"}
    for sj in jobs.values():
        assert state_changes(final["events"], sj["id"]) == SUBJOB_PATH
    spawning = next(
        e["message"]
        for e in final["events"]
        if e["subjob_id"] == jobs["gen"]["id"] and e["to_state"] == "POSTPROCESSED"
    )
    assert spawning == "spawned 5 children: " + ", ".join([*eigens, "reduce"])
    argo_moves = [e["to_state"] for e in final["events"] if e["subjob_id"] is None]
    assert argo_moves[argo_moves.index("SUBJOB_IN_POSTPROCESSED") :] == [
        "SUBJOB_IN_POSTPROCESSED",
        "SUBJOBS_RUNNING",
        "SUBJOBS_COMPLETED",
        "STAGED_OUT",
        "HISTORY",
    ]
    gen_dir = Path(jobs["gen"]["workdir"])
    expected = sorted(
        largest_eigenvalue(json.loads((gen_dir / f"matrix{i}.json").read_text())) for i in range(4)
    )
    result = json.loads((Path(jobs["reduce"]["workdir"]) / "eigenvalues.json").read_text())
    assert result == pytest.approx(expected, rel=1e-9)
    for eigen in eigens:  # the parent's children.json came along with its output, set aside
        assert not (Path(jobs[eigen]["workdir"]) / "children.json").exists()


def test_bad_children_json_fails_the_postprocess(dep):
    post = script(
        dep.root / "apps" / "badspawn" / "post.py",
        """
        import json
        json.dump([{"name": "a", "site": "alpha", "application": "echo"},
                   {"name": "b", "site": "beta", "application": "echo", "parents": ["x"]}],
                  open("children.json", "w"))
        """,
    )
    exe = script(dep.root / "apps" / "badspawn" / "app.py", "pass\n")
    applications.add_app("badspawn", "alpha", exe, postprocess=post)
    argo_id = dep.submit({"name": "badspawn", "subjobs": [node("gen", "alpha", "badspawn")]})
    final = dep.wait_state(argo_id, ENDS, 60)
    assert final["state"] == "SUBJOBS_COMPLETED_FAILED", final
    (gen,) = final["subjobs"]
    assert gen["state"] == "POSTPROCESSED_FAILED"
    assert gen["state_message"] == (
        "children.json[1].parents: names 'x', which is no subjob of this job"
    )
