"""Site choice through the real service: Redis, the Argo worker and a worker for each of two
sites. A subjob naming both sites as candidates, while one of them rests (its breaker open),
runs at the other; the choice and its reason are on the job's timeline."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest

from backends.batchscript import job_workdir
from edgeceleryapp.db import session_scope
from edgeceleryapp.devstack import wait_for
from edgeceleryapp.models import SiteMonitor, utcnow
from edgeceleryapp.settings import get_settings
from edgeceleryapp.site_health import worker_alive
from tests.helpers import echo_app
from tests.integration.conftest import Deployment, running_deployment

pytestmark = pytest.mark.integration

SITES = ("alpha", "beta")


@pytest.fixture(scope="module")
def dep(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    root = tmp_path_factory.mktemp("choice")
    with running_deployment(root, SITES) as running:
        for site in SITES:
            echo_app(running.root, site, name="echo")
        yield running


def _workers_alive() -> bool:
    now = utcnow()
    with session_scope() as s:
        sites = get_settings().sites
        return all(worker_alive(s.get(SiteMonitor, name), sites[name], now) for name in SITES)


def test_a_subjob_naming_two_sites_runs_where_the_breaker_is_closed(dep: Deployment):
    wait_for(_workers_alive, 30, "both sites' workers to tick", 0.2)
    with session_scope() as s:  # alpha rests, as after failed submissions
        s.get(SiteMonitor, "alpha").breaker_until = utcnow() + timedelta(minutes=10)
    argo_id = dep.submit(
        {
            "name": "choose",
            "subjobs": [
                {"name": "first", "site": "beta", "application": "echo"},
                {"name": "either", "sites": ["alpha", "beta"], "application": "echo"},
            ],
        }
    )
    done = dep.wait_state(argo_id, {"HISTORY"}, timeout=60)
    either = done["subjobs"][1]
    assert either["site"] == "beta"
    assert either["sites"] == ["alpha", "beta"]
    [chosen] = [
        e["message"]
        for e in done["events"]
        if e["subjob_id"] == either["id"] and e["message"].startswith("site chosen:")
    ]
    assert chosen.startswith("site chosen: beta: the best candidate that can take it now")
    assert "alpha: breaker open" in chosen
    # It ran once at beta (echo_app's log of runs, which it received with the first subjob's
    # output, has one line more), and nothing of it is at alpha.
    first = job_workdir(dep.root / "sites" / "beta", done["subjobs"][0]["id"])
    at_beta, at_alpha = (job_workdir(dep.root / "sites" / s, either["id"]) for s in SITES[::-1])
    assert (at_beta / "runs.log").read_text() == (first / "runs.log").read_text() + "run\n"
    assert not at_alpha.exists()
