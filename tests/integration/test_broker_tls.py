"""The service over a Redis that speaks only TLS and asks every client for a certificate
(``redis-server --tls-port``, a throw-away CA): a two-site job runs and its status messages
arrive; a client with the wrong CA or without a certificate is refused with the setting to
fix, and a worker so configured stops (exit 2) instead of retrying forever."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgeceleryapp.devstack import write_config
from edgeceleryapp.throwaway_ca import ThrowawayCA
from tests.helpers import echo_app
from tests.integration.conftest import Deployment, StatusListener, running_deployment

pytestmark = pytest.mark.integration
SITES = ("alpha", "beta")


@pytest.fixture(scope="module")
def tls_deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    with running_deployment(tmp_path_factory.mktemp("tls"), SITES, tls=True) as dep:
        echo_app(dep.root, "alpha", name="first")
        echo_app(dep.root, "beta", name="second")
        yield dep


def test_a_two_site_job_runs_over_verified_tls(tls_deployment: Deployment) -> None:
    dep = tls_deployment
    assert dep.broker_url.startswith("rediss://")
    listener = StatusListener(dep.broker_url, "tls_jobs")
    try:
        argo_id = dep.submit(
            {
                "name": "over-tls",
                "user_id": "tls.job",
                "group_identifier": "tls",
                "job_status_routing_key": "tls_jobs",
                "subjobs": [
                    {"name": "one", "site": "alpha", "application": "first"},
                    {"name": "two", "site": "beta", "application": "second"},
                ],
            }
        )
        assert dep.wait_state(argo_id, {"HISTORY"})["state"] == "HISTORY"
        listener.drain_until(
            lambda bodies: any(
                b.get("argo_job_id") == argo_id and b.get("to_state") == "HISTORY" for b in bodies
            )
        )
    finally:
        listener.close()


def _worker_with(
    dep: Deployment, root: Path, broker: dict[str, str]
) -> subprocess.CompletedProcess:
    """``edgecelery worker --site alpha`` against the deployment's broker with ``broker`` as
    its ``[broker]`` table."""
    config = write_config(root, dep.broker_url, ("alpha",), broker_settings=broker)
    env = {**dep.env, "EDGECELERY_CONFIG": str(config)}
    return subprocess.run(
        [sys.executable, "-m", "edgeceleryapp.cli", "worker", "--site", "alpha"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_broker_certificate_from_another_ca_is_refused(
    tls_deployment: Deployment, tmp_path: Path
) -> None:
    tls = tls_deployment.tls
    assert tls is not None
    stranger = ThrowawayCA(tmp_path / "other-ca")
    done = _worker_with(
        tls_deployment, tmp_path, {**tls.settings(), "ca_file": str(stranger.ca_file)}
    )
    assert done.returncode == 2, done.stderr
    assert "broker.ca_file" in done.stderr and "could not be verified" in done.stderr


def test_a_client_without_a_certificate_is_refused(
    tls_deployment: Deployment, tmp_path: Path
) -> None:
    tls = tls_deployment.tls
    assert tls is not None
    done = _worker_with(tls_deployment, tmp_path, {"ca_file": str(tls.ca.ca_file)})
    assert done.returncode == 2, done.stderr
    assert "broker.cert_file" in done.stderr and "client certificate" in done.stderr


def test_a_client_certificate_from_another_ca_is_refused(
    tls_deployment: Deployment, tmp_path: Path
) -> None:
    tls = tls_deployment.tls
    assert tls is not None
    forged = ThrowawayCA(tmp_path / "forger").issue("edgecelery")
    done = _worker_with(
        tls_deployment,
        tmp_path,
        {
            "ca_file": str(tls.ca.ca_file),
            "cert_file": str(forged.cert_file),
            "key_file": str(forged.key_file),
        },
    )
    assert done.returncode == 2, done.stderr
    assert "broker.cert_file" in done.stderr
