"""A site worker polls on its own clock: with no argo worker and no celery beat running, a
Balsam-only job submitted to the site runs to JOB_FINISHED. The worker is plain ``celery -A
edgeceleryapp worker -Q site.alpha`` (the clock finds its site from the queue); the other
integration tests run ``edgecelery worker --site``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgeceleryapp.devstack import wait_for
from tests.helpers import SUBJOB_PATH, balsam_message, echo_app, subjob, subjob_states
from tests.integration.conftest import Deployment

pytestmark = pytest.mark.integration


def test_a_site_worker_polls_its_jobs_to_the_end_without_the_argo_worker(tmp_path: Path) -> None:
    with Deployment.running(
        tmp_path, ("alpha",), workers=(), poll_interval=0.3, status_interval=1.0
    ) as dep:
        echo_app(dep.root, "alpha")
        dep.start_worker("alpha", app="edgeceleryapp")
        job_id = int(dep.cli("job", "add", "-q", "-", stdin=json.dumps(balsam_message())).strip())

        def ended() -> bool:
            state = subjob(job_id).state
            return state == "JOB_FINISHED" or state.endswith("_FAILED")

        wait_for(ended, 60, f"job {job_id} to end", 0.2)
        log = (dep.root / "logs" / "alpha.log").read_text()
        assert subjob(job_id).state == "JOB_FINISHED", log[-3000:]
        assert subjob_states(job_id) == SUBJOB_PATH
        assert list(dep.workers) == ["alpha"], "no argo worker, so no beat"
    assert "site clock: polling alpha every 0.3s" in log
