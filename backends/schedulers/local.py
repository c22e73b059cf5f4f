"""The ``local`` scheduler: runs the batch script as a detached process on this host.

For one-machine use and tests. A small spool directory per site holds, per batch job, the pid
(written with noclobber, so a doubled submission starts the script once) and the exit status.
The job id is the job's name, so ``find`` is a file lookup.
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path

from backends.batchscript import alive, read_int, start_detached, stream_file
from backends.schedulers.base import BatchRequest, BatchStatus, Scheduler, State

MARK = "edgecelery-local"
START_GRACE = 5.0  # seconds a just-started run may take to write its pid file
CANCELLED = "cancelled"  # what a cancel writes in the pid file of a run that had not started


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
        out, err = (stream_file(job.workdir, job.attempt, s) for s in ("out", "err"))
        start_detached(MARK, pid_file, exit_file, (script, out, err))
        return job.name

    def find(self, name: str) -> str | None:
        """A run that recorded itself. A marker alone is a submission that may have died
        before its run started (a worker killed between the two): submitting again is safe, the
        pid file's noclobber start runs the script once."""
        pid_file, exit_file, _ = self._files(name)
        return name if pid_file.exists() or exit_file.exists() else None

    def statuses(self, ids: list[str]) -> dict[str, BatchStatus]:
        out: dict[str, BatchStatus] = {}
        for name in ids:
            pid_file, exit_file, marker = self._files(name)
            code = read_int(exit_file)
            if code is not None:
                out[name] = BatchStatus(State.FINISHED, code)
            elif alive(pid_file, MARK):
                out[name] = BatchStatus(State.RUNNING)
            elif (code := read_int(exit_file)) is not None:  # ended between the two looks
                out[name] = BatchStatus(State.FINISHED, code)
            elif marker.exists() and not pid_file.exists() and _younger(marker, START_GRACE):
                out[name] = BatchStatus(State.QUEUED)  # starting; later, unknown: lost_after
        return out

    def forbid(self, name: str) -> None:
        self._take_pid_file(name)

    def _take_pid_file(self, name: str) -> bool:
        """A run that has not recorded its pid yet (a subjob killed right after its
        submission, or on a machine so loaded that the detached start has not been scheduled)
        is stopped from ever starting: its pid file is taken here first, with the same
        noclobber create the run's wrapper uses, so the wrapper finds it taken and exits
        without running anything, however late it comes. Whether this took it."""
        pid_file, _, _ = self._files(name)
        self.spool.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(pid_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as fh:
            fh.write(f"{CANCELLED}\n")
        return True

    def cancel(self, batch_id: str) -> None:
        """Kill the run's process group, or keep it from starting (``_take_pid_file``)."""
        if self._take_pid_file(batch_id):
            return
        pid_file, _, _ = self._files(batch_id)
        # The run took the file: its pid is there, or about to be (the shell creates the file,
        # then writes it).
        deadline = time.monotonic() + START_GRACE
        while read_int(pid_file) is None and time.monotonic() < deadline:
            if pid_file.read_text().strip() == CANCELLED:
                return
            time.sleep(0.01)
        if alive(pid_file, MARK):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(int(pid_file.read_text()), 15)


def _younger(path: Path, seconds: float) -> bool:
    try:
        return time.time() - path.stat().st_mtime < seconds
    except FileNotFoundError:
        return False
