"""The launcher a pilot's batch script starts (``edgecelery pilot run <dir>``): inside one
allocation it keeps taking the subjobs assigned to its pilot and runs each on a share of the
allocation's nodes, as Balsam's launcher does within one batch job (ensembles).

It needs neither broker nor database: assignments come through the pilot's inbox on the shared
file system (edgeceleryapp/pilot_inbox.py); each subjob's exit code goes to its attempt's file
in the subjob's work directory, which the site worker's tick reads as it reads a batch job's.
It ends when it has had no work for ``idle_exit_seconds``, or when the scheduler stops it (wall
time). Subjobs run in the launcher's process group and are killed with it (``PR_SET_PDEATHSIG``):
a pilot that dies leaves nothing running that the service would start again.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from backends.batchscript import stream_file
from edgeceleryapp import pilot_inbox as inbox
from edgeceleryapp import pilot_slots as slots

log = logging.getLogger(__name__)

TICK = 0.2  # seconds between looks at the inbox and the running subjobs
# Seconds a run killed by a signal waits before its death is called the application's. At its
# wall time the scheduler signals every process of the allocation (Slurm: SIGTERM to all of
# them), the launcher too, and not always the launcher first: a run's SIGTERM death recorded
# as its exit code (143) would fail the subjob, where the pilot's end makes it a new attempt.
SIGNAL_GRACE = 1.0
BEAT = 1.0  # seconds between heartbeats
PID_FILE = "launcher.pid"
_PR_SET_PDEATHSIG = 1


@dataclass
class Run:
    assignment: inbox.Assignment
    process: subprocess.Popen
    nodes: list[int]
    need: slots.Need
    signalled: float | None = None  # when its death by a signal was first seen


def _die_with_parent() -> None:
    """In the child before exec: SIGKILL when the launcher dies, however it dies; and
    SIGCHLD unblocked again (the launcher blocks it to wait for it)."""
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGCHLD})


def node_names(count: int) -> list[str]:
    """The allocation's host names where the scheduler lists them (PBS's node file), else
    this host's, one per node."""
    node_file = os.environ.get("PBS_NODEFILE")
    if node_file and Path(node_file).is_file():
        names = list(dict.fromkeys(Path(node_file).read_text().split()))
        if len(names) >= count:
            return names[:count]
    return [socket.gethostname()] * count


class Launcher:
    def __init__(self, directory: Path):
        self.directory = directory
        self.config = inbox.read_config(directory)
        self.started = time.time()
        self.deadline = self.started + self.config.wall_seconds
        self.names = node_names(self.config.nodes)
        self.free = [self.config.slots_per_node] * self.config.nodes
        self.runs: dict[str, Run] = {}
        self.stopping = ""

    def remaining(self) -> float:
        return self.deadline - time.time()

    def start(self, name: str) -> bool:
        """Claim and start one assignment if it fits now; whether it did."""
        try:
            assignment = inbox.read(self.directory, inbox.INBOX, name)
        except FileNotFoundError:
            return False
        need = slots.need_of(
            assignment.num_nodes, assignment.processes_per_node, self.config.slots_per_node
        )
        if assignment.wall_time_minutes and assignment.wall_time_minutes * 60 > self.remaining():
            return False  # it would not end before the allocation does: left for another pilot
        nodes = slots.place(self.free, need, self.config.slots_per_node)
        if nodes is None or not inbox.claim(self.directory, name):
            return False
        if inbox.cancelled(self.directory, name):  # killed between its posting and now
            inbox.finish(self.directory, name)
            return True
        workdir = Path(assignment.workdir)
        env = {
            **os.environ,
            **assignment.env,
            "EDGECELERY_PILOT_ID": str(self.config.pilot_id),
            "EDGECELERY_PILOT_NODES": ",".join(self.names[i] for i in nodes),
        }
        out = stream_file(workdir, assignment.attempt, "out")
        err = stream_file(workdir, assignment.attempt, "err")
        out.parent.mkdir(parents=True, exist_ok=True)
        try:
            with open(out, "wb") as stdout, open(err, "wb") as stderr:
                process = subprocess.Popen(
                    assignment.argv,
                    cwd=workdir,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=stdout,
                    stderr=stderr,
                    preexec_fn=_die_with_parent,  # the launcher has no threads
                )
        except OSError as exc:
            pilot = self.config.pilot_id
            err.write_text(f"pilot {pilot}: cannot start {assignment.argv[0]}: {exc}\n")
            inbox.write_exit_code(assignment, 127)
            inbox.finish(self.directory, name)
            return True
        slots.take(self.free, nodes, need)
        self.runs[name] = Run(assignment, process, nodes, need)
        return True

    def reap(self) -> None:
        for name, run in list(self.runs.items()):
            cancelled = inbox.cancelled(self.directory, name)
            if cancelled and run.process.poll() is None:
                run.process.kill()  # the subjob was killed: its exit code says so (137)
                run.process.wait()
            code = run.process.poll()
            if code is None:
                continue
            if code < 0 and not cancelled:  # a signal: the allocation's end, perhaps
                run.signalled = run.signalled or time.monotonic()
                if time.monotonic() - run.signalled < SIGNAL_GRACE:
                    continue
            # A signal's death is reported as a shell reports it (128 + the signal).
            inbox.write_exit_code(run.assignment, code if code >= 0 else 128 - code)
            inbox.finish(self.directory, name)
            slots.give_back(self.free, run.nodes, run.need)
            del self.runs[name]

    def stop(self, signum: int, _frame: FrameType | None) -> None:
        self.stopping = f"stopped by signal {signal.Signals(signum).name}"

    def run(self) -> str:
        """Take work until idle or stopped; why it ended."""
        signal.signal(signal.SIGTERM, self.stop)
        signal.signal(signal.SIGINT, self.stop)
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGCHLD})
        (self.directory / PID_FILE).write_text(f"{os.getpid()}\n")
        last_beat = 0.0
        idle_since = time.monotonic()
        while not self.stopping:
            if time.monotonic() - last_beat >= BEAT:
                inbox.beat(self.directory)
                last_beat = time.monotonic()
            self.reap()
            started = [name for name in inbox.waiting(self.directory) if self.start(name)]
            if self.runs or started:
                idle_since = time.monotonic()
            elif time.monotonic() - idle_since >= self.config.idle_exit_seconds:
                reason = f"idle for {int(self.config.idle_exit_seconds)} s"
                inbox.end(self.directory, reason)
                return reason
            # Woken at once by a subjob's end: its exit code is written within milliseconds,
            # so a pilot killed right after (its wall time) rarely leaves a finished run
            # without its result, which would then run again as a new attempt.
            signal.sigtimedwait({signal.SIGCHLD}, TICK)
        for run in self.runs.values():
            run.process.kill()
        inbox.end(self.directory, self.stopping)
        return self.stopping


def run(directory: Path) -> str:
    return Launcher(directory).run()
