"""The ``local`` scheduler: runs the batch script as a detached process on this host.

For one-machine use and tests. A small spool directory per site holds, per batch job, the pid
(written with noclobber, so a doubled submission starts the script once) and the exit status.
The job id is the job's name, so ``find`` is a file lookup.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from pathlib import Path

from backends.schedulers.base import FINISHED, QUEUED, RUNNING, BatchRequest, BatchStatus, Scheduler

# A fixed program; every job-derived value reaches it as a positional argument, never as text.
WRAPPER = (
    'set -C; { echo "$$" > "$1"; } 2>/dev/null || exit 0; set +C; '
    '/bin/sh "$3" > "$4" 2> "$5"; echo "$?" > "$2.part"; mv -f "$2.part" "$2"'
)
MARK = "edgecelery-local"


class LocalScheduler(Scheduler):
    kind = "local"

    @property
    def spool(self) -> Path:
        return self.site.workdir / ".local-scheduler"

    def _files(self, name: str) -> tuple[Path, Path, Path]:
        return (
            self.spool / f"{name}.pid",
            self.spool / f"{name}.exit",
            self.spool / f"{name}.submitted",
        )

    def submit(self, script: Path, job: BatchRequest) -> str:
        self.spool.mkdir(parents=True, exist_ok=True)
        pid_file, exit_file, marker = self._files(job.name)
        if pid_file.exists() or exit_file.exists():
            return job.name
        marker.write_text(str(time.time()))
        control = script.parent
        subprocess.run(
            [
                "setsid",
                "-f",
                "/bin/sh",
                "-c",
                WRAPPER,
                MARK,
                str(pid_file),
                str(exit_file),
                str(script),
                str(control / "batch.out"),
                str(control / "batch.err"),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            check=True,
        )
        return job.name

    def find(self, name: str) -> str | None:
        return name if any(p.exists() for p in self._files(name)) else None

    @staticmethod
    def _alive(pid_file: Path) -> bool:
        try:
            pid = int(pid_file.read_text())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (FileNotFoundError, ValueError, ProcessLookupError):
            return False
        return MARK.encode() in cmdline and str(pid_file).encode() in cmdline

    def statuses(self, ids: list[str]) -> dict[str, BatchStatus]:
        out: dict[str, BatchStatus] = {}
        for name in ids:
            pid_file, exit_file, marker = self._files(name)
            code = _read_int(exit_file)
            if code is not None:
                out[name] = BatchStatus(FINISHED, code)
            elif self._alive(pid_file):
                out[name] = BatchStatus(RUNNING)
            elif (code := _read_int(exit_file)) is not None:  # ended between the two looks
                out[name] = BatchStatus(FINISHED, code)
            elif marker.exists() and not pid_file.exists():
                out[name] = BatchStatus(QUEUED)
        return out

    def cancel(self, batch_id: str) -> None:
        pid_file, _exit, _marker = self._files(batch_id)
        if self._alive(pid_file):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(int(pid_file.read_text()), 15)


def _read_int(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None
