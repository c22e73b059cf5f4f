"""Seed 000 Figure 1 on one machine: the production system's input on an scp server, subjob 1
at a small cluster, its output moved to the supercomputer's site over GridFTP, subjob 2 there,
the final output delivered to an scp destination. Real sshd and globus-gridftp-server (GSI with
the test CA), real workers, the demo's AlpGen-style applications."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgeceleryapp.cli.demo import demo_message, install_demo_apps
from tests.helpers import ARGO_ENDS, start_service
from tests.integration.conftest import running_deployment
from tests.sshd import start_sshd

pytestmark = pytest.mark.integration
SITES = ("hep_cluster", "mira")


@pytest.fixture(scope="module")
def gridftp() -> dict[str, str]:
    return start_service("gridftp", timeout=900)


@pytest.fixture(scope="module")
def figure1(tmp_path_factory, gridftp):
    root = tmp_path_factory.mktemp("fig1")
    sshd = start_sshd(root / "sshd", extra_config=("Subsystem sftp internal-sftp",))
    ssh = {
        "username": "root",
        "key_file": str(sshd.client_key),
        "known_hosts": str(sshd.known_hosts),
    }
    grid = {
        "x509_proxy": gridftp["X509_USER_PROXY"],
        "checksum": "adler32",
        "hosts": ["127.0.0.1"],
    }
    sites = {name: {"transfers": grid} for name in SITES}
    try:
        with running_deployment(
            root,
            SITES,
            sites,
            argo_settings={"transfers": {"ssh": ssh, "hosts": ["127.0.0.1"]}},
            env_extra={"X509_CERT_DIR": gridftp["X509_CERT_DIR"]},
        ) as dep:
            install_demo_apps(root, SITES)
            dep.sshd_port = sshd.port
            dep.gridftp_port = int(gridftp["EDGECELERY_GRIDFTP_PORT"])
            yield dep
    finally:
        sshd.stop()


def tree(folder: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


def test_figure_one_scp_in_gridftp_between_sites_scp_out(figure1):
    dep = figure1
    source = dep.data / "atlas-input"
    source.mkdir()
    (source / "alpGen.ini").write_text("[generation]\nevents = 5000\nseed = 7\n")
    inbox = dep.root / "mira-inbox" / "warmup-grid"
    delivered = dep.data / "atlas-output"
    message = demo_message(
        f"scp://127.0.0.1:{dep.sshd_port}{source}",
        f"scp://127.0.0.1:{dep.sshd_port}{delivered}",
        SITES,
    )
    message["subjobs"][0]["output_url"] = f"gsiftp://127.0.0.1:{dep.gridftp_port}{inbox}"
    argo_id = dep.submit(message)
    final = dep.wait_state(argo_id, ARGO_ENDS, timeout=180)
    assert final["state"] == "HISTORY", final
    first, second = final["subjobs"]
    assert second["input_url"] == first["output_url"], "subjob 2 reads what subjob 1 wrote"
    # Bytes compared at every hop: site A's work directory -> GridFTP inbox -> site B ->
    # the scp destination.
    site_a = tree(dep.root / "sites" / "hep_cluster" / "jobs" / str(first["id"]))
    site_b = tree(dep.root / "sites" / "mira" / "jobs" / str(second["id"]))
    moved = tree(inbox)
    assert moved == {name: site_a[name] for name in moved}, "A's output arrived intact"
    assert set(moved) >= {"grid.dat", "alpGen.ini", "preprocess.log", "postprocess.log"}
    assert site_b["grid.dat"] == moved["grid.dat"], "B worked on what GridFTP delivered"
    out = tree(delivered)
    assert out["events.lhe"] == site_b["events.lhe"]
    assert len(out["events.lhe"].splitlines()) == 5000
    assert out["alpGen.ini"] == (source / "alpGen.ini").read_bytes()
    assert not [p for p in delivered.rglob(".*.part-*")], "no temporary file left"
    assert not [p for p in inbox.rglob(".*.part-*")]
