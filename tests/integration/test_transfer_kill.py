"""A site worker killed in the middle of staging in 1 GB, then restarted: the file lands
complete and verified, once, and no temporary file is left behind."""

from __future__ import annotations

import hashlib
import os
import signal

import pytest

from edgeceleryapp.devstack import wait_for
from tests.helpers import echo_app, state_changes

pytestmark = pytest.mark.integration

GIB = 1 << 30


def big_file(path, size: int = GIB) -> str:
    """Non-repeating content (a counter in every block), written fast; its sha256."""
    digest = hashlib.sha256()
    block = os.urandom(1 << 20)
    with path.open("wb") as fh:
        for i in range(size >> 20):
            chunk = i.to_bytes(8, "big") + block[8:]
            digest.update(chunk)
            fh.write(chunk)
    return digest.hexdigest()


def test_worker_killed_mid_transfer_lands_the_file_once(deployment):
    dep = deployment
    echo_app(dep.root, "gamma", name="bigdata")
    source = dep.data / "big-in"
    source.mkdir()
    expected = big_file(source / "events.dat")
    argo_id = dep.submit(
        {
            "name": "big",
            "subjobs": [
                {
                    "name": "big",
                    "site": "gamma",
                    "application": "bigdata",
                    "input_url": f"local://{source}",
                }
            ],
        }
    )
    jobs = dep.root / "sites" / "gamma" / "jobs"

    def partial() -> list:
        return [p for p in jobs.glob("*/.events.dat.part-*") if p.stat().st_size > 0]

    parts = wait_for(partial, 60, "the transfer to be under way", interval=0.01)
    size_at_kill = parts[0].stat().st_size
    dep.workers["gamma"].kill(signal.SIGKILL)
    assert size_at_kill < GIB, "killed in the middle"
    dep.start_worker("gamma")
    final = dep.wait_state(argo_id, {"HISTORY", "SUBJOB_IN_PREPROCESSED_FAILED"}, timeout=180)
    assert final["state"] == "HISTORY", final
    (sj,) = final["subjobs"]
    workdir = jobs / str(sj["id"])
    landed = workdir / "events.dat"
    digest = hashlib.sha256()
    with landed.open("rb") as fh:
        while block := fh.read(1 << 22):
            digest.update(block)
    assert digest.hexdigest() == expected
    assert not list(workdir.glob(".*.part-*")), "no temporary file left"
    timeline = state_changes(final["events"], sj["id"])
    assert timeline.count("STAGED_IN") == 1
