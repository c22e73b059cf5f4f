"""Job sources run by a real argo worker (one stack for the module: Redis, the argo worker, one
site worker): a row inserted in an experiment's database, or a file dropped in a folder,
becomes one Argo job that runs to HISTORY; a killed and restarted worker makes no second job
of a row; a bad file is refused with its reason and the worker stays up."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import delete, select

from edgeceleryapp import dead_letters
from edgeceleryapp.db import read_scope, session_scope
from edgeceleryapp.devstack import sources_toml, wait_for
from edgeceleryapp.models import ArgoJob, SourceCursor
from tests.helpers import echo_app
from tests.integration.conftest import Deployment, running_deployment

pytestmark = pytest.mark.integration

TEMPLATE = {
    "name": "shot-{shot}",
    "group_identifier": "{machine}",
    "subjobs": [{"name": "efit", "site": "alpha", "application": "srcapp"}],
}


def insert_shot(db: Path, shot: int) -> None:
    with sqlite3.connect(db) as conn:
        conn.execute("INSERT INTO shots VALUES (?, ?)", (shot, "d3d"))


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    root = tmp_path_factory.mktemp("sources")
    with sqlite3.connect(root / "shots.db") as conn:
        conn.execute("CREATE TABLE shots (shot INTEGER PRIMARY KEY, machine TEXT)")
    sources = [
        {
            "name": "shots",
            "kind": "sql",
            "url": f"sqlite:///{root / 'shots.db'}",
            "query": "SELECT shot, machine FROM shots WHERE shot > :after "
            "ORDER BY shot LIMIT :limit",
            "key": "shot",
            "template": json.dumps(TEMPLATE),
        },
        {"name": "drop", "kind": "directory", "path": str(root / "drop")},
    ]
    with running_deployment(root, ("alpha",), extra=sources_toml(sources)) as dep:
        echo_app(dep.root, "alpha", name="srcapp")
        yield dep


def jobs_named(name: str) -> list[tuple[int, str | None]]:
    with read_scope() as s:
        rows = s.execute(select(ArgoJob.id, ArgoJob.intake_key).where(ArgoJob.name == name))
        return [(argo_id, key) for argo_id, key in rows]


def cursor() -> int | str | None:
    with read_scope() as s:
        return s.scalar(select(SourceCursor.last_key))


def one_job(name: str) -> int:
    (found,) = wait_for(lambda: jobs_named(name), 20, f"a job named {name}")
    return found[0]


def test_a_row_inserted_makes_one_job_that_reaches_history(stack: Deployment) -> None:
    insert_shot(stack.root / "shots.db", 1001)
    argo_id = one_job("shot-1001")
    final = stack.wait_state(argo_id, {"HISTORY"})
    assert final["group_identifier"] == "d3d"
    assert jobs_named("shot-1001") == [(argo_id, "source:shots:1001")]


def test_a_killed_worker_restarted_makes_no_second_job_of_a_row(stack: Deployment) -> None:
    db = stack.root / "shots.db"
    insert_shot(db, 1002)
    one_job("shot-1002")
    stack.workers["argo"].kill(signal.SIGKILL)
    # As if it died after storing the jobs but before moving its cursor: the restarted worker
    # reads every row again.
    with session_scope() as s:
        s.execute(delete(SourceCursor))
    insert_shot(db, 1003)
    stack.start_worker("argo")
    one_job("shot-1003")
    wait_for(lambda: cursor() == 1003, 20, "the restarted worker to read every row again")
    for shot in (1001, 1002, 1003):
        assert len(jobs_named(f"shot-{shot}")) == 1


def drop(folder: Path, name: str, text: str) -> None:
    part = folder / f".{name}.part"
    part.write_text(text)
    os.rename(part, folder / name)


def test_a_dropped_file_becomes_a_job_and_is_moved_aside(stack: Deployment) -> None:
    folder = stack.root / "drop"
    wait_for(lambda: (folder / "taken").is_dir(), 20, "the directory source to start")
    job = {"name": "dropped", "subjobs": [{"name": "a", "site": "alpha", "application": "srcapp"}]}
    drop(folder, "dropped.json", json.dumps(job))
    argo_id = one_job("dropped")
    assert stack.wait_state(argo_id, {"HISTORY"})["state"] == "HISTORY"
    assert not (folder / "dropped.json").exists()
    (taken,) = (folder / "taken").iterdir()
    assert taken.name.endswith("-dropped.json") and json.loads(taken.read_text()) == job


def test_a_bad_file_is_refused_with_its_reason_and_the_worker_stays_up(
    stack: Deployment,
) -> None:
    folder = stack.root / "drop"
    wait_for(lambda: (folder / "taken").is_dir(), 20, "the directory source to start")
    bad = {"name": "bad", "subjobs": [{"name": "a", "site": "nowhere", "application": "x"}]}
    drop(folder, "bad.json", json.dumps(bad))
    why = wait_for(
        lambda: next((folder / "refused").glob("*-bad.json.why"), None), 20, "the refusal"
    )
    assert "subjobs[0].site: no site named 'nowhere'" in why.read_text()
    (letter,) = [x for x in dead_letters.listing("drop") if x["message_id"].endswith("bad.json")]
    assert "subjobs[0].site" in letter["reason"]
    listed = json.loads(stack.cli("intake", "dead-letters", "ls", "--source", "drop", "--json"))
    assert [x["id"] for x in listed] == [letter["id"]]
    assert stack.workers["argo"].process.poll() is None
    drop(folder, "after.json", json.dumps({**bad, "name": "after", "subjobs": [
        {"name": "a", "site": "alpha", "application": "srcapp"}]}))  # fmt: skip
    one_job("after")
    stack.wait_for_workers(["argo"])
