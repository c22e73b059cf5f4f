"""Real Slurm: 200 subjobs running ``/bin/true`` through the project's one-node Slurm
(``scripts/slurm.sh start``: slurmctld, slurmd, slurmdbd on loopback), with the real service
(Redis, the Argo worker with beat, one site worker of concurrency 2; ``poll_interval`` 1 s,
``status_interval`` 30 s, as in production).

Every Slurm command the site worker issues goes through a PATH shim that logs it: the wall time
until all subjobs are finished, and the commands by tool.

    .venv/bin/python bench/slurm.py [--subjobs 200]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from common import ROOT, Figure, parse_args, record, status_command_figures

TOOLS = ("sbatch", "squeue", "sacct", "scontrol", "scancel")


def write_shims(folder: Path, log: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for tool in TOOLS:
        shim = folder / tool
        shim.write_text(
            f'#!/bin/sh\nprintf "%s %s\\n" "$(date +%s.%N)" "{tool}" >> "{log}"\n'
            f'exec /usr/bin/{tool} "$@"\n'
        )
        shim.chmod(0o755)


def finished(subjobs: int) -> bool:
    """Whether every subjob finished; stops the benchmark at the first that failed."""
    from sqlalchemy import func, select

    from edgeceleryapp.db import read_scope
    from edgeceleryapp.models import SubJob

    with read_scope() as s:
        counts = dict(s.execute(select(SubJob.state, func.count()).group_by(SubJob.state)).all())
    failed = {k: v for k, v in counts.items() if k.endswith("_FAILED")}
    if failed:
        raise SystemExit(f"subjobs failed on Slurm: {failed}")
    return counts.get("JOB_FINISHED", 0) >= subjobs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subjobs", type=int, default=200)
    args = parse_args(parser, "50 subjobs", subjobs=50)

    started = subprocess.run(
        [str(ROOT / "scripts" / "slurm.sh"), "start"], capture_output=True, text=True, check=True
    )
    slurm_conf = started.stdout.strip().splitlines()[-1].split("=", 1)[1]

    from edgeceleryapp.devstack import DevStack, wait_for

    root = Path(tempfile.mkdtemp(prefix="edgecelery-slurm-"))
    log = root / "slurm-commands.log"
    log.touch()
    write_shims(root / "shims", log)
    with DevStack.running(
        root,
        ("cluster",),
        concurrency=2,
        env_extra={"SLURM_CONF": slurm_conf, "PATH": f"{root / 'shims'}:{os.environ['PATH']}"},
        poll_interval=1.0,
        status_interval=30.0,
        site_settings={"cluster": {"scheduler": "slurm", "queue": "debug", "accounting": True}},
    ):
        # Imported once the settings file is in place: the Celery app reads it on import.
        from edgeceleryapp import applications
        from workflows.intake import submit_balsam

        applications.add_app("true", "cluster", "/bin/true")
        start = time.perf_counter()
        for i in range(args.subjobs):
            submit_balsam(
                {"name": f"t{i}", "site": "cluster", "application": "true", "wall_time_minutes": 5}
            )
        wait_for(
            lambda: finished(args.subjobs), 1800, "every subjob to finish on Slurm", interval=0.5
        )
        wall = time.perf_counter() - start
    lines = [line.split() for line in log.read_text().splitlines()]
    calls = Counter(tool for _, tool in lines)
    status_times = [float(t) for t, tool in lines if tool in ("squeue", "sacct", "scontrol")]
    figures = [
        Figure(f"{args.subjobs} subjobs finished, wall time", wall, "s"),
        Figure("subjobs per minute", args.subjobs / wall * 60, "/min"),
        Figure("sbatch commands", calls["sbatch"], "", f"<= {args.subjobs}"),
        Figure("status commands (squeue + sacct + scontrol)", len(status_times), ""),
        *status_command_figures(status_times, wall, 30.0),
    ]
    record(
        "slurm",
        f"Real Slurm: {args.subjobs} subjobs of /bin/true, one node "
        "(poll_interval 1 s, status_interval 30 s)",
        figures,
        {"commands": dict(calls)},
    )


if __name__ == "__main__":
    sys.exit(main())
