"""Subjobs through a real Grid Engine (scripts/gridengine.sh: sge_qmaster and sge_execd of
Debian 12's gridengine 8.1.9, one host). The fake in tests/fakes/sge copies this version's
formats; here the plug-in reads the real qsub, qstat -xml and qacct answers, and an Argo job
goes through real worker processes."""

from __future__ import annotations

import os
import subprocess

import pytest

from backends.schedulers import scheduler_for
from backends.schedulers.base import FINISHED, QUEUED, RUNNING, BatchStatus, Scheduler
from edgeceleryapp import applications
from edgeceleryapp.devstack import wait_for
from edgeceleryapp.settings import get_settings, reset_settings
from tasks.site_steps import workdir_of
from tests.helpers import (
    ARGO_ENDS,
    SUBJOB_PATH,
    balsam_message,
    batch_name,
    echo_app,
    finish_after_batch,
    gated_app,
    poll_until_ended,
    run_to_submitted,
    script,
    start_service,
    subjob,
    subjob_states,
)
from tests.integration.conftest import running_deployment
from workflows.intake import submit_balsam

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def sge_env() -> dict[str, str]:
    """Start (or find running) the project's Grid Engine; the environment its tools need."""
    return start_service("gridengine", timeout=600)


@pytest.fixture
def sge_site(env, sge_env, monkeypatch):  # type: ignore[no-untyped-def]
    """The unit-test deployment with site alpha on the real Grid Engine."""
    for key, value in sge_env.items():
        monkeypatch.setenv(key, value)
    text = env.config.read_text()
    changed = text.replace(
        '[sites.alpha]\nscheduler = "local"\n',
        '[sites.alpha]\nscheduler = "sge"\nqueue = "all.q"\n',
    )
    assert changed != text
    env.config.write_text(changed)
    reset_settings()
    return env


def accounted(scheduler: Scheduler, batch_id: str) -> BatchStatus | None:
    """The job's status once it has ended (the answer then comes from qacct); an unknown id
    asked alongside is left out of the answer."""
    answer = scheduler.statuses([batch_id, "999999"])
    assert "999999" not in answer
    status = answer.get(batch_id)
    return status if status is not None and status.state == FINISHED else None


def test_a_subjob_runs_through_grid_engine_and_qacct_reports_it(sge_site):
    gated_app(sge_site.root, patience=120)
    out = sge_site.data / "out"
    job_id = submit_balsam(balsam_message(app="gated", output_url=f"local://{out}"), start=False)
    run_to_submitted(job_id)
    batch_id = subjob(job_id).batch_job_id
    assert batch_id.isdigit(), batch_id
    scheduler = scheduler_for(get_settings().site("alpha"))
    assert scheduler.find(batch_name(job_id)) == batch_id
    seen = wait_for(
        lambda: scheduler.statuses([batch_id]).get(batch_id),
        60,
        "Grid Engine to list the job",
        interval=0.2,
    )
    assert seen.state in (QUEUED, RUNNING)
    wait_for(
        lambda: scheduler.statuses([batch_id])[batch_id].state == RUNNING,
        60,
        "the job to start",
        interval=0.2,
    )
    (workdir_of(subjob(job_id)) / "go").touch()
    ended = poll_until_ended(job_id, timeout=60)
    assert ended.state == "POSTPROCESSED", ended.state_message
    finish_after_batch(job_id)
    assert subjob_states(job_id) == SUBJOB_PATH
    assert (out / "runs.log").read_text() == "run\n"

    record = wait_for(lambda: accounted(scheduler, batch_id), 60, "qacct to record the job", 0.3)
    assert record.exit_code == 0, record
    assert scheduler.find(batch_name(job_id)) == batch_id, "found in accounting after it ended"


def test_a_failing_application_is_failed_with_its_exit_code(sge_site):
    echo_app(sge_site.root, "alpha", exit_code=3)
    job_id = submit_balsam(balsam_message(), start=False)
    run_to_submitted(job_id)
    final = poll_until_ended(job_id, timeout=60)
    assert final.state == "EXECUTION_FINISHED_FAILED"
    assert final.exit_code == 3 and "exited with code 3" in final.state_message
    scheduler = scheduler_for(get_settings().site("alpha"))
    batch_id = final.batch_job_id
    record = wait_for(lambda: accounted(scheduler, batch_id), 60, "qacct to record the job", 0.3)
    assert record.exit_code == 3


def test_a_cancelled_job_leaves_the_queue(sge_site):
    gated_app(sge_site.root, patience=120)
    job_id = submit_balsam(balsam_message(app="gated"), start=False)
    run_to_submitted(job_id)
    batch_id = subjob(job_id).batch_job_id
    scheduler = scheduler_for(get_settings().site("alpha"))
    wait_for(
        lambda: scheduler.statuses([batch_id]).get(batch_id),
        60,
        "Grid Engine to list the job",
        interval=0.2,
    )
    scheduler.cancel(batch_id)
    qstat = ["qstat", "-xml"]
    wait_for(
        lambda: f"<JB_job_number>{batch_id}<" not in subprocess.check_output(qstat, text=True),
        60,
        "qdel to remove the job",
        interval=0.2,
    )
    scheduler.cancel(batch_id)  # a job already gone is no error
    assert not (workdir_of(subjob(job_id)) / "runs.log").exists()


def test_an_argo_job_with_two_subjobs_reaches_history(tmp_path, sge_env):
    sites = {"gridA": {"scheduler": "sge", "queue": "all.q"}, "gridB": {"scheduler": "sge"}}
    env = {**sge_env, "PATH": os.environ["PATH"]}
    with running_deployment(tmp_path, tuple(sites), sites, env_extra=env) as dep:
        for name, site_name, body in (
            ("gen", "gridA", "open('events.txt', 'w').write('1 2 3 4\\n')\n"),
            (
                "count",
                "gridB",
                "open('n.txt', 'w').write(str(len(open('events.txt').read().split())))\n",
            ),
        ):
            exe = script(dep.root / "apps" / f"{name}.py", body)
            applications.add_app(name, site_name, exe)
        out = dep.data / "sge-out"
        argo_id = dep.submit(
            {
                "name": "sge-two-sites",
                "output_url": f"local://{out}",
                "subjobs": [
                    {"name": "gen", "site": "gridA", "application": "gen"},
                    {"name": "count", "site": "gridB", "application": "count"},
                ],
            }
        )
        final = dep.wait_state(argo_id, ARGO_ENDS, 180)
    assert final["state"] == "HISTORY", final
    assert (out / "n.txt").read_text() == "4"
    assert all(sj["batch_job_id"].isdigit() for sj in final["subjobs"])
