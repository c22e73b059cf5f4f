"""Subjobs through a real one-node Slurm (scripts/slurm.sh: slurmctld, slurmd, slurmdbd and
munge from Debian, on loopback). One site's worker runs sbatch itself; another site is reached
over SSH through a real sshd, as a worker on a service host reaches a login node."""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select

from edgeceleryapp import applications
from edgeceleryapp.db import session_scope
from edgeceleryapp.devstack import wait_for
from edgeceleryapp.models import SubJob
from tests.helpers import ARGO_ENDS, ROOT, batch_name, script, start_service
from tests.integration.conftest import running_deployment
from tests.sshd import start_sshd

pytestmark = pytest.mark.integration
SLURM_TOOLS = ("sbatch", "squeue", "sacct", "scontrol", "scancel")


@pytest.fixture(scope="module")
def slurm_conf() -> str:
    """Start (or find running) the project's one-node cluster; its SLURM_CONF."""
    exported = start_service("slurm", timeout=600)
    assert list(exported) == ["SLURM_CONF"], exported
    return exported["SLURM_CONF"]


def write_shims(folder: Path) -> Path:
    """PATH shims that log every Slurm command, then run the real one. The sbatch shim can
    be told to hang after Slurm accepted the job (the worker is killed right then)."""
    folder.mkdir(parents=True, exist_ok=True)
    for tool in SLURM_TOOLS:
        shim = folder / tool
        hang = ""
        if tool == "sbatch":
            hang = (
                'if [ -e "$SHIM_DIR/hang-next-sbatch" ]; then rm -f "$SHIM_DIR/hang-next-sbatch"\n'
                f'  out=$(/usr/bin/{tool} "$@"); rc=$?\n'
                '  printf "%s\\n" "$out" > "$SHIM_DIR/sbatch-accepted"; sleep 300; exit $rc\n'
                "fi\n"
            )
        shim.write_text(
            "#!/bin/sh\n"
            f'printf "%s %s\\n" "$(date +%s.%N)" "{tool} $*" >> "$SHIM_DIR/calls.log"\n'
            f'{hang}exec /usr/bin/{tool} "$@"\n'
        )
        shim.chmod(0o755)
    return folder


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, slurm_conf):
    root = tmp_path_factory.mktemp("slurm")
    shims = write_shims(root / "shims")
    sshd = start_sshd(root / "sshd", extra_config=(f"SetEnv SLURM_CONF={slurm_conf}",))
    ssh = {
        "host": "127.0.0.1",
        "port": sshd.port,
        "username": "root",
        "key_file": str(sshd.client_key),
        "known_hosts": str(sshd.known_hosts),
    }
    slurm = {"scheduler": "slurm", "queue": "debug", "status_interval": 1.0, "accounting": True}
    sites = {
        "cluster": {**slurm},
        "remote": {**slurm, "runner": "ssh", "ssh": ssh},
        "throttled": {**slurm, "max_queued": 5},
    }
    env = {
        "SLURM_CONF": slurm_conf,
        "SHIM_DIR": str(shims),
        "PATH": f"{shims}:{os.environ['PATH']}",
    }
    try:
        with running_deployment(
            root, tuple(sites), sites, env_extra=env, poll_interval=0.3, concurrency=2
        ) as dep:
            dep.shims = shims
            yield dep
    finally:
        sshd.stop()


def register(dep, name: str, site: str, body: str = "") -> None:
    exe = script(dep.root / "apps" / f"{name}.py", body or "open('ran', 'a').write('ran\\n')\n")
    applications.add_app(name, site, exe)


def submit_from_a_process(dep, prefix: str, site: str, app: str, n: int) -> list[int]:
    """Submit ``n`` Balsam jobs of ``app`` at ``site`` (named prefix0, prefix1, ...) from a
    separate process, as a client of the deployment would; their ids."""
    submit = (
        "import json, sys\n"
        "from workflows.intake import submit_balsam\n"
        "print(json.dumps([submit_balsam(m) for m in json.loads(sys.argv[1])]))\n"
    )
    messages = [
        {"name": f"{prefix}{i}", "site": site, "application": app, "wall_time_minutes": 5}
        for i in range(n)
    ]
    done = subprocess.run(
        [sys.executable, "-c", submit, json.dumps(messages)],
        env=dep.env,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=str(ROOT),
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


def slurm_jobs_named(name: str, slurm_conf: str) -> list[str]:
    out = subprocess.run(
        ["squeue", "-h", "--states=all", "--name", name, "-o", "%i"],
        capture_output=True,
        text=True,
        env={**os.environ, "SLURM_CONF": slurm_conf},
        check=True,
    ).stdout
    return out.split()


def test_two_subjobs_one_local_one_over_ssh_reach_history(cluster):
    dep = cluster
    register(dep, "gen", "cluster", "open('events.txt', 'w').write('1 2 3\\n')\n")
    register(
        dep,
        "count",
        "remote",
        "n = len(open('events.txt').read().split())\nopen('count.txt', 'w').write(str(n))\n",
    )
    out = dep.data / "slurm-out"
    argo_id = dep.submit(
        {
            "name": "slurm-two-sites",
            "output_url": f"local://{out}",
            "subjobs": [
                {"name": "gen", "site": "cluster", "application": "gen", "wall_time_minutes": 5},
                {"name": "count", "site": "remote", "application": "count", "wall_time_minutes": 5},
            ],
        }
    )
    final = dep.wait_state(
        argo_id,
        ARGO_ENDS,
        timeout=120,
    )
    assert final["state"] == "HISTORY", final
    assert (out / "count.txt").read_text() == "3"
    for sj in final["subjobs"]:
        assert sj["batch_job_id"].isdigit(), "a Slurm job id"
        assert sj["state"] == "JOB_FINISHED"


def test_two_hundred_subjobs_cost_one_status_command_per_interval(cluster):
    dep = cluster
    register(dep, "quick", "cluster", "pass\n")
    log = dep.shims / "calls.log"
    log.write_text("")
    ids = submit_from_a_process(dep, "q", "cluster", "quick", 200)

    def finished() -> bool:
        with session_scope() as s:
            states = dict(
                s.execute(
                    select(SubJob.state, func.count())
                    .where(SubJob.id.in_(ids))
                    .group_by(SubJob.state)
                ).all()
            )
        assert not any(k.endswith("_FAILED") for k in states), states
        return states.get("JOB_FINISHED") == 200

    wait_for(finished, 400, "200 subjobs to finish on Slurm", interval=1.0)
    calls = [line.split(" ", 2) for line in log.read_text().splitlines()]
    status = sorted(
        float(t)
        for t, tool, args in calls
        if tool in ("squeue", "sacct", "scontrol") and " -j " in f" {args} "
    )
    gaps = [b - a for a, b in itertools.pairwise(status)]
    submits = sum(1 for _t, tool, _a in calls if tool == "sbatch")
    print(
        f"\n200 subjobs: {submits} sbatch, {len(status)} status commands, "
        f"smallest gap {min(gaps):.2f}s (status_interval 1.0s), "
        f"{len(calls) - submits - len(status)} other Slurm commands"
    )
    assert submits == 200
    # The status lease is taken every interval; each command starts a little after its lease,
    # by however long the loaded machine took to get there, so single gaps jitter. Two
    # commands under one lease would sit close together, and over the run there can be at most
    # one per interval.
    assert min(gaps) >= 0.5, "two status commands under one lease"
    assert len(status) <= (status[-1] - status[0]) / 1.0 + 1, "more than one per interval"


def test_worker_killed_right_after_slurm_accepted_submits_once(cluster, slurm_conf):
    dep = cluster
    register(dep, "once", "cluster")
    (dep.shims / "hang-next-sbatch").write_text("")
    accepted = dep.shims / "sbatch-accepted"
    accepted.unlink(missing_ok=True)
    argo_id = dep.submit(
        {
            "name": "killed-after-sbatch",
            "subjobs": [
                {"name": "once", "site": "cluster", "application": "once", "wall_time_minutes": 5}
            ],
        }
    )
    wait_for(accepted.exists, 60, "Slurm to accept the batch job")
    dep.workers["cluster"].kill(signal.SIGKILL)
    dep.start_worker("cluster")
    final = dep.wait_state(argo_id, {"HISTORY", "SUBJOB_QUEUED_FAILED"}, timeout=120)
    assert final["state"] == "HISTORY", final
    (sj,) = final["subjobs"]
    assert sj["batch_job_id"] == accepted.read_text().strip()
    assert slurm_jobs_named(batch_name(sj["id"]), slurm_conf) == [sj["batch_job_id"]]


def test_max_queued_bounds_our_pending_jobs(cluster, slurm_conf):
    dep = cluster
    register(dep, "brief", "throttled", "import time\ntime.sleep(0.3)\n")
    ids = set(submit_from_a_process(dep, "t", "throttled", "brief", 50))
    env = {**os.environ, "SLURM_CONF": slurm_conf}
    most = samples = 0
    prefix = batch_name(0).removesuffix("0a1")
    deadline = time.monotonic() + 400
    while time.monotonic() < deadline:
        names = subprocess.run(
            ["/usr/bin/squeue", "-h", "-t", "PENDING,CONFIGURING", "-o", "%j"],
            capture_output=True,
            text=True,
            env=env,
            check=True,
        ).stdout.split()
        ours = [
            n for n in names if n.startswith(prefix) and int(n[len(prefix) :].split("a")[0]) in ids
        ]
        most, samples = max(most, len(ours)), samples + 1
        with session_scope() as s:
            left = s.scalar(
                select(func.count()).where(SubJob.id.in_(ids), SubJob.state != "JOB_FINISHED")
            )
        if left == 0:
            break
        time.sleep(0.2)  # the sampling period, not a wait for an event
    print(f"\nmax_queued=5: {samples} samples, at most {most} of ours pending in Slurm")
    assert left == 0, "all 50 finish"
    assert most <= 5
