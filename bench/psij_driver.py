"""PSI/J's side of ``bench/slurm.py --psij``: N ``/bin/true`` jobs through psij-python's Slurm
executor, one batch job each; prints the wall time in seconds.

Runs in its own virtual environment (``.venv-psij``, made by ``bench/slurm.py``): psij-python
pins ``packaging<=25`` while kombu's Redis extra pins 26, so the two cannot share one.

    .venv-psij/bin/python bench/psij_driver.py SUBJOBS WORKDIR
"""

from __future__ import annotations

import sys
import time
from datetime import timedelta
from pathlib import Path

import psij
from psij.executors.batch.slurm import SlurmExecutorConfig


def main(subjobs: int, work: Path) -> float:
    work.mkdir(parents=True, exist_ok=True)
    executor = psij.JobExecutor.get_instance(
        "slurm", config=SlurmExecutorConfig(work_directory=work)
    )
    attributes = psij.JobAttributes(queue_name="debug", duration=timedelta(minutes=5))
    start = time.perf_counter()
    jobs = [
        psij.Job(psij.JobSpec(executable="/bin/true", attributes=attributes))
        for _ in range(subjobs)
    ]
    for job in jobs:
        executor.submit(job)
    for job in jobs:
        status = job.wait()
        if status is None or status.state != psij.JobState.COMPLETED:
            raise SystemExit(f"a PSI/J job did not complete: {status}")
    return time.perf_counter() - start


if __name__ == "__main__":
    print(f"{main(int(sys.argv[1]), Path(sys.argv[2])):.3f}")
