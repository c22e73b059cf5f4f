"""Real Slurm: 200 subjobs running ``/bin/true`` through the project's one-node Slurm
(``scripts/slurm.sh start``: slurmctld, slurmd, slurmdbd on loopback), with the real service
(Redis, the Argo worker with beat, one site worker of concurrency 2; ``poll_interval`` 1 s,
``status_interval`` 30 s, as in production). With ``--pilots`` the site runs its subjobs
inside pilots (``[sites.cluster.pilots]``: at most 2 pilots of one node, 16 subjobs at once
each): a few ``sbatch`` calls instead of one per subjob.

Every Slurm command the site worker issues goes through a PATH shim that logs it: the wall time
until all subjobs are finished, and the commands by tool.

    .venv/bin/python bench/slurm.py [--subjobs 200] [--pilots] [--psij]

``--psij`` then submits the same number of ``/bin/true`` jobs to the same Slurm through PSI/J
(psij-python's Slurm executor, one batch job each, its default 30 s queue polling), the
simplest peer, and prints its rows beside ours.
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
PILOTS = {
    "enabled": True,
    "max_pilots": 2,
    "slots_per_node": 16,
    "min_wall_minutes": 10,
    "max_wall_minutes": 30,
    "idle_exit_seconds": 10.0,
}


def write_shims(folder: Path, log: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for tool in TOOLS:
        shim = folder / tool
        # ``squeue --start`` asks when pending jobs will start (the pilot sizer's backfill
        # windows), not about our jobs: logged apart from the status commands.
        shim.write_text(
            f"#!/bin/sh\nname={tool}\n"
            f'for a in "$@"; do [ "$a" = --start ] && name={tool}-start; done\n'
            f'printf "%s %s\\n" "$(date +%s.%N)" "$name" >> "{log}"\n'
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


def count_calls(log: Path, since: int = 0) -> tuple[Counter, list[float]]:
    """Slurm commands logged from line ``since`` on: by tool, and the status commands' times."""
    lines = [line.split() for line in log.read_text().splitlines()[since:]]
    calls = Counter(tool for _, tool in lines)
    return calls, [float(t) for t, tool in lines if tool in ("squeue", "sacct", "scontrol")]


PSIJ_VENV = ROOT / ".venv-psij"


def psij_python() -> Path:
    """PSI/J's own interpreter (``bench/psij_driver.py`` says why it has its own), made once."""
    python = PSIJ_VENV / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(PSIJ_VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "psij-python>=0.9"], check=True)
    return python


def psij_run(subjobs: int, root: Path, env: dict[str, str]) -> float:
    """The same jobs through PSI/J's Slurm executor, one batch job each; its wall time."""
    driver = Path(__file__).with_name("psij_driver.py")
    done = subprocess.run(
        [str(psij_python()), str(driver), str(subjobs), str(root / "psij")],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=True,
    )
    return float(done.stdout.split()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subjobs", type=int, default=200)
    parser.add_argument("--pilots", action="store_true", help="run the subjobs in pilots")
    parser.add_argument("--psij", action="store_true", help="then the same jobs through PSI/J")
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
        site_settings={
            "cluster": {
                "scheduler": "slurm",
                "queue": "debug",
                "accounting": True,
                **({"pilots": PILOTS} if args.pilots else {}),
            }
        },
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
    ours = len(log.read_text().splitlines())
    calls, status_times = count_calls(log)
    figures = [
        Figure(f"{args.subjobs} subjobs finished, wall time", wall, "s"),
        Figure("subjobs per minute", args.subjobs / wall * 60, "/min"),
        Figure(
            "sbatch commands", calls["sbatch"], "", "<= 5" if args.pilots else f"<= {args.subjobs}"
        ),
        Figure("status commands (squeue + sacct + scontrol)", len(status_times), ""),
        *status_command_figures(status_times, wall, 30.0),
    ]
    record(
        "slurm-pilots" if args.pilots else "slurm",
        f"Real Slurm: {args.subjobs} subjobs of /bin/true, one node"
        + (", in pilots" if args.pilots else "")
        + " (poll_interval 1 s, status_interval 30 s)",
        figures,
        {"commands": dict(calls)},
    )
    if not args.psij:
        return
    env = {"SLURM_CONF": slurm_conf, "PATH": f"{root / 'shims'}:{os.environ['PATH']}"}
    psij_wall = psij_run(args.subjobs, root, env)
    psij_calls, psij_status = count_calls(log, ours)
    record(
        "slurm-psij",
        f"PSI/J on the same Slurm: {args.subjobs} jobs of /bin/true, one batch job each "
        "(queue polling every 30 s, its default)",
        [
            Figure(f"{args.subjobs} jobs finished, wall time", psij_wall, "s"),
            Figure("jobs per minute", args.subjobs / psij_wall * 60, "/min"),
            Figure("sbatch commands", psij_calls["sbatch"], ""),
            Figure("Slurm commands in all", sum(psij_calls.values()), ""),
            Figure("status commands (squeue + sacct + scontrol)", len(psij_status), ""),
            Figure(
                "our wall time against PSI/J's",
                psij_wall / wall,
                "x",
                ">= 5" if args.pilots else "",
            ),
        ],
        {"commands": dict(psij_calls)},
    )


if __name__ == "__main__":
    sys.exit(main())
