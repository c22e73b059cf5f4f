"""Argo jobs through the real service: Redis, the Argo worker with beat, one worker per site,
all separate processes (seed 000 Figure 1 on one machine)."""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import select

from edgeceleryapp import applications
from edgeceleryapp.db import session_scope
from edgeceleryapp.devstack import wait_for
from edgeceleryapp.models import JobEvent
from tests.helpers import (
    ARGO_ENDS,
    ARGO_LOOP,
    JOHNDOE,
    SUBJOB_PATH,
    argo_message,
    batch_name,
    echo_app,
    script,
    slow_preprocess_app,
    state_changes,
)
from tests.integration.conftest import StatusListener

pytestmark = pytest.mark.integration


def e2e_message(name: str, subjobs: list[dict], **fields) -> dict:
    """An Argo job of user johndoe in its own group, with these subjobs."""
    return argo_message(
        name,
        user_id=f"{name}.job001",
        group_identifier=f"group.{name}",
        **JOHNDOE,
        subjobs=subjobs,
        **fields,
    )


@contextmanager
def listening(dep, routing_key: str) -> Iterator[StatusListener]:
    """The status messages sent on ``routing_key`` while the block runs."""
    listener = StatusListener(dep.broker_url, routing_key)
    try:
        yield listener
    finally:
        listener.close()


def subjob(site: str, app: str, **fields) -> dict:
    return {
        "name": f"{app}@{site}",
        "site": site,
        "application": app,
        "wall_time_minutes": 5,
        "num_nodes": 1,
        "processes_per_node": 1,
        **fields,
    }


@pytest.fixture(scope="module")
def apps(deployment):
    echo_app(deployment.root, "alpha", name="stepone")
    echo_app(deployment.root, "beta", name="steptwo")
    return deployment


def test_two_site_argo_job_completes_with_every_state_and_message(apps):
    dep = apps
    inp = dep.data / "e2e-in"
    inp.mkdir()
    (inp / "app.ini").write_text("--events\n42\n")
    out = dep.data / "e2e-out"
    with listening(dep, "e2e_monitor") as listener:
        argo_id = dep.submit(
            e2e_message(
                "e2e",
                [
                    subjob("alpha", "stepone", config_file="app.ini"),
                    subjob("beta", "steptwo", config_file="app.ini"),
                ],
                input_url=f"local://{inp}",
                output_url=f"local://{out}",
                job_status_routing_key="e2e_monitor",
            )
        )
        final = dep.wait_state(argo_id, ARGO_ENDS)
        assert final["state"] == "HISTORY", final
        listener.drain_until(
            lambda bodies: any(b["kind"] == "argo" and b["to_state"] == "HISTORY" for b in bodies)
        )

    # The timeline: every Argo state of 2.2.1 in order, the loop once per subjob.
    argo_timeline = state_changes(final["events"], None)
    assert argo_timeline == [
        "CREATED",
        "STAGED_IN",
        *ARGO_LOOP,
        *ARGO_LOOP[:-1],
        "SUBJOB_INCREMENTED",
        "SUBJOBS_COMPLETED",
        "STAGED_OUT",
        "HISTORY",
    ]
    for sj in final["subjobs"]:
        timeline = state_changes(final["events"], sj["id"])
        assert timeline == SUBJOB_PATH, sj
        assert sj["attempt"] == 1
    # Data flowed: input -> subjob 1 -> subjob 2 -> output_url.
    assert json.loads((out / "args.json").read_text()) == ["--events", "42"]
    assert (out / "app.ini").exists()
    assert (out / "runs.log").read_text() == "run\nrun\n", "each subjob's app ran once"

    # Every JobEvent went out once on the routing key; in event_id order, the order recorded.
    # Not necessarily in arrival order: a site's poll tick (in its worker's main process) and
    # the step it resumes (in the pool) publish from different processes.
    with session_scope() as s:
        ids = list(
            s.scalars(
                select(JobEvent.id).where(JobEvent.argo_job_id == argo_id).order_by(JobEvent.id)
            )
        )
    received = [b["event_id"] for b in listener.bodies if b["argo_job_id"] == argo_id]
    assert sorted(set(received)) == ids
    in_event_order = sorted(listener.bodies, key=lambda b: b["event_id"])
    argo_seen = [b["to_state"] for b in in_event_order if b["kind"] == "argo"]
    assert argo_seen == argo_timeline


def test_unregistered_application_is_refused_at_its_site(apps):
    dep = apps
    with listening(dep, "refusal_monitor") as listener:
        argo_id = dep.submit(
            e2e_message(
                "refused",
                [subjob("beta", "stepone")],
                job_status_routing_key="refusal_monitor",
            )
        )
        final = dep.wait_state(argo_id, {"SUBJOB_IN_PREPROCESSED_FAILED", "HISTORY"})
        listener.drain_until(
            lambda b: any(m["to_state"].endswith("_FAILED") and m["kind"] == "argo" for m in b)
        )
    assert final["state"] == "SUBJOB_IN_PREPROCESSED_FAILED"
    (sj,) = final["subjobs"]
    assert sj["state"] == "STAGED_IN_FAILED"
    assert "'stepone' is not registered at site 'beta'" in sj["state_message"]
    assert sj["batch_job_id"] is None
    failure = [
        m for m in listener.bodies if m["kind"] == "argo" and m["to_state"].endswith("_FAILED")
    ]
    assert "not registered" in failure[0]["message"]


def test_failing_application_fails_then_retry_runs_it_to_history(apps):
    dep = apps
    flag = dep.data / "fixed"
    exe = script(
        dep.root / "apps" / "flaky" / "app.py",
        f"""
        import os, sys
        open("runs.log", "a").write("run\\n")
        sys.exit(0 if os.path.exists({str(flag)!r}) else 7)
        """,
    )
    applications.add_app("flaky", "beta", exe)
    with listening(dep, "flaky_monitor") as listener:
        argo_id = dep.submit(
            e2e_message(
                "flaky",
                [subjob("alpha", "stepone"), subjob("beta", "flaky")],
                job_status_routing_key="flaky_monitor",
            )
        )
        failed = dep.wait_state(argo_id, {"SUBJOB_RUN_FINISHED_FAILED", "HISTORY"})
        listener.drain_until(
            lambda b: any(m["to_state"] == "SUBJOB_RUN_FINISHED_FAILED" for m in b)
        )
        assert failed["state"] == "SUBJOB_RUN_FINISHED_FAILED"
        second = failed["subjobs"][1]
        assert second["state"] == "EXECUTION_FINISHED_FAILED"
        assert "exited with code 7" in second["state_message"]
        said = [m for m in listener.bodies if m["to_state"] == "SUBJOB_RUN_FINISHED_FAILED"]
        assert "exited with code 7" in said[0]["message"]

        flag.write_text("")
        restarted = json.loads(dep.cli("argo", "retry", str(argo_id), "--json"))
        assert restarted["state"] == "SUBJOB_IN_PREPROCESSED"
        final = dep.wait_state(argo_id, {"HISTORY", "SUBJOB_RUN_FINISHED_FAILED"})
    assert final["state"] == "HISTORY"
    second = final["subjobs"][1]
    assert second["attempt"] == 2
    timeline = state_changes(final["events"], second["id"])
    assert timeline == [
        *SUBJOB_PATH[:6],
        "EXECUTION_FINISHED_FAILED",
        "PREPROCESSED",
        *SUBJOB_PATH[3:],
    ]
    spool = dep.root / "sites" / "beta" / ".local-scheduler"
    assert sorted(p.name for p in spool.glob(f"ec*_{second['id']}a*.submitted")) == [
        f"{batch_name(second['id'], 1)}.submitted",
        f"{batch_name(second['id'], 2)}.submitted",
    ]


def test_site_worker_killed_mid_chain_then_restarted_completes_once(apps):
    """SIGKILL the gamma worker while it runs the preprocess step; a new worker finishes."""
    dep = apps
    started, go = slow_preprocess_app(dep.root, dep.data, "gamma")
    argo_id = dep.submit(e2e_message("killed", [subjob("gamma", "slowpre")]))
    wait_for(started.exists, 30, "the preprocess step to start")
    dep.workers["gamma"].kill(signal.SIGKILL)
    go.write_text("")
    dep.start_worker("gamma", app="edgeceleryapp")  # `celery -A edgeceleryapp worker` works too
    final = dep.wait_state(argo_id, {"HISTORY", "SUBJOB_IN_PREPROCESSED_FAILED"}, timeout=90)
    assert final["state"] == "HISTORY"
    (sj,) = final["subjobs"]
    timeline = state_changes(final["events"], sj["id"])
    assert timeline == SUBJOB_PATH, "no state twice, none backwards"
    assert started.read_text().count("started") == 2, "the killed step ran again"
    workdir = Path(dep.root / "sites" / "gamma" / "jobs" / str(sj["id"]))
    assert (workdir / "runs.log").read_text() == "run\n"
    spool = dep.root / "sites" / "gamma" / ".local-scheduler"
    assert len(list(spool.glob(f"ec*_{sj['id']}a*.submitted"))) == 1, "one batch submission"
