"""Site health and why a job waits, against real workers on a private Redis: a site whose
worker runs shows its heartbeat; a site without one says "no worker has taken queue
site.beta" and counts the message waiting in its queue; an Argo job whose http input is refused
says it retries, with the attempt and the error, on the record and in its status messages."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgeceleryapp.devstack import free_port, wait_for
from tests.helpers import echo_app
from tests.integration.conftest import Deployment, StatusListener

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def half(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    """Sites alpha and beta; workers for the Argo steps and alpha only."""
    root: Path = tmp_path_factory.mktemp("health")
    quick = "lease_seconds = 3\nredrive_after = 10\n[retry]\nmax_retries = 3\nbackoff_base = 1.0"
    with Deployment.running(
        root,
        ("alpha", "beta"),
        workers=("argo", "alpha"),
        poll_interval=0.3,
        status_interval=1.0,
        extra=quick + "\nbackoff_max = 2.0",
        argo_settings={"transfers": {"hosts": ["127.0.0.1"]}},  # the refused input's server
    ) as dep:
        echo_app(dep.root, "alpha")
        echo_app(dep.root, "beta")
        yield dep


def job(name: str, site: str, **fields: object) -> dict:
    return {
        "name": name,
        "user_id": f"{name}.job",
        "job_status_routing_key": f"health_{name}",
        "subjobs": [{"name": "one", "site": site, "application": "echo"}],
        **fields,
    }


def test_a_site_without_a_worker_is_named_and_its_queue_counted(half: Deployment) -> None:
    def alive() -> dict | None:
        sites = {h["site"]: h for h in json.loads(half.cli("site", "ls", "--json"))}
        return sites if sites["alpha"]["worker"]["alive"] else None

    sites = wait_for(alive, 30, "alpha's worker to tick", 0.2)
    assert sites["beta"]["worker"] == {"alive": False, "last_seen": None, "seen_by": None}

    argo_id = half.submit(job("stranded", "beta"))
    shown = half.wait_state(argo_id, {"SUBJOB_SUBMITTED"})
    sub = shown["subjobs"][0]["id"]
    assert shown["waiting"]["why"] == (
        f"subjob {sub}: no worker has taken queue site.beta yet; "
        "no worker of site beta has been seen"
    )
    beta = json.loads(half.cli("site", "show", "beta", "--json"))
    assert beta["messages_waiting"] == 1  # site.stage_in, waiting for a worker
    assert beta["jobs"] == {"CREATED": 1}
    text = half.cli("argo", "show", str(argo_id))
    assert "no worker has taken queue site.beta yet" in text


def test_a_refused_input_says_it_retries(half: Deployment) -> None:
    url = f"http://127.0.0.1:{free_port()}/input.dat"  # nothing listens there
    listener = StatusListener(half.broker_url, "health_refused")
    try:
        argo_id = half.submit(job("refused", "alpha", input_url=url))

        def retrying() -> dict | None:
            data = half.show(argo_id)
            return data if data["state_message"].startswith("retrying stage-in in ") else None

        shown = wait_for(retrying, 30, "the retry to be said", 0.2)
        assert shown["state"] == "CREATED"
        said = re.fullmatch(
            rf"retrying stage-in in \d+ s \(attempt [123] of 3\): {re.escape(url)}: .*refused",
            shown["state_message"],
        )
        assert said, shown["state_message"]
        # The why is read at the same look; by then the retry may have begun (its back-off
        # is a second or two), and then it says so instead.
        assert shown["waiting"]["why"] == shown["state_message"] or shown["waiting"][
            "why"
        ].startswith("stage-in under way (lease until "), shown["waiting"]
        listener.drain_until(
            lambda bodies: any(
                b["from_state"] == b["to_state"] == "CREATED"
                and b["message"].startswith("retrying stage-in")
                for b in bodies
            )
        )
        final = half.wait_state(argo_id, {"STAGED_IN_FAILED"}, timeout=60)
        assert final["state_message"].startswith("gave up after 3 retries")
    finally:
        listener.close()
