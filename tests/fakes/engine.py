"""The one engine behind every fake batch scheduler in tests/fakes/<family>/<tool>.

Each fake is a small executable that takes the real tool's arguments and prints the real
tool's output; this module keeps what they share: the job table, real execution, and faults.

State lives in ``$FAKE_SCHED_DIR/state.json`` (an ``fcntl`` lock on ``state.lock`` around every
read-modify-write), one record per job: id, name, queue, account, state, submit/start/end
times, script, pid, exit code, cause. A job is started for real, as a detached process
(with backends/batchscript.py's ``start_detached``, as the local scheduler does) whose pid and
exit status land in
``$FAKE_SCHED_DIR/jobs/<id>.pid`` / ``.exit``, so the project's exit-code file appears in the
job's work directory. The scheduler "cycle" runs on every call of any fake (``tick``): queued
jobs start, running ones are looked at, faults are applied.

Faults, from ``$FAKE_SCHED_DIR/faults.json``, read on every call:

    {"refuse": "<text>"}    submission fails: the tool prints <text> (or, for ``true``, its own
                            usual refusal) and exits with the tool's error code
    {"hang": ["qstat"]}     that command sleeps past any time-out (until the fault is removed,
                            at most $FAKE_HANG_SECONDS, default 600)
    {"vanish": true}        jobs are killed silently and disappear from listings and history
    {"node_fail": true}     running jobs are killed and reported as the tool reports a node
                            failure; jobs that start meanwhile fail at once
    {"preempt": true}       the same, reported as a preemption
    {"timeout": true}       the same, reported as the wall-time limit
    {"hold_queue": true}    jobs stay queued, none starts
    {"unreachable": true}   the node and server listings (pbsnodes, qstat -B, nodelist) fail
                            as they do when the server or system component is down

The machine has $FAKE_NODES nodes (default 1); running jobs hold them in the order they
started (``occupancy``), for the node listings; jobs start whatever their size, as before.

A hung command is logged in ``hangs.log``. A job's end is reported $FAKE_END_LATENCY seconds
(default 1) after its process exits, as real servers report it a moment late.
"""

from __future__ import annotations

import contextlib
import fcntl
import getpass
import json
import os
import shlex
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from backends.batchscript import alive as alive_run
from backends.batchscript import read_int, start_detached

MARK = "fake-sched-job"
KILL_FAULTS = (("node_fail", "node_fail"), ("preempt", "preempted"), ("timeout", "timeout"))
START_GRACE = 5.0  # seconds a just-started job may take to write its pid file


def end_latency() -> float:
    """Seconds between a job's exit and its scheduler reporting it ended ($FAKE_END_LATENCY,
    default 1): real servers take a moment too (PBS state E, LSF post-exec, the shadow's
    final update), and a poller that reads exit-code files before asking must cope."""
    return float(os.environ.get("FAKE_END_LATENCY", "1.0"))


def sched_dir() -> Path:
    path = Path(os.environ["FAKE_SCHED_DIR"])
    (path / "jobs").mkdir(parents=True, exist_ok=True)
    return path


def owner() -> str:
    return os.environ.get("USER") or getpass.getuser()


def faults() -> dict:
    try:
        return json.loads((sched_dir() / "faults.json").read_text() or "{}")
    except FileNotFoundError:
        return {}


def set_faults(directory: Path, **items: object) -> None:
    """For tests: replace the fault file (atomically)."""
    part = Path(directory) / "faults.json.part"
    part.write_text(json.dumps(items))
    part.replace(Path(directory) / "faults.json")


def hang_if_asked(tool: str) -> None:
    """The command "hangs": it sleeps while the fault names it (killed by the caller's
    time-out, as a hung real command would be). Checked before any lock is taken."""
    if tool not in faults().get("hang", []):
        return
    with open(sched_dir() / "hangs.log", "a") as log:
        log.write(f"{tool} {os.getpid()}\n")
    deadline = time.monotonic() + float(os.environ.get("FAKE_HANG_SECONDS", "600"))
    while tool in faults().get("hang", []) and time.monotonic() < deadline:
        time.sleep(0.05)


def refusal(default: str) -> str | None:
    value = faults().get("refuse")
    if not value:
        return None
    return default if value is True else str(value)


def fail(text: str, code: int) -> None:
    sys.stderr.write(text if text.endswith("\n") else text + "\n")
    sys.exit(code)


@contextlib.contextmanager
def state() -> Iterator[dict]:
    """The job table, locked for the duration; saved on a clean exit."""
    base = sched_dir()
    with open(base / "state.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        path = base / "state.json"
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            data = {"next_id": 1, "submissions": 0, "jobs": {}}
        yield data
        part = path.with_suffix(".part")
        part.write_text(json.dumps(data, indent=1))
        part.replace(path)


@contextlib.contextmanager
def ticked(job_env) -> Iterator[dict]:  # type: ignore[no-untyped-def]
    """The job table after one scheduler cycle (``tick``), locked as ``state`` locks it: what
    every command of a real scheduler sees."""
    with state() as data:
        tick(data, job_env)
        yield data


def hangs(directory: Path) -> list[str]:
    """For tests: the commands that hung so far (tool name and pid)."""
    try:
        return (Path(directory) / "hangs.log").read_text().splitlines()
    except FileNotFoundError:
        return []


def load(directory: Path) -> dict:
    """For tests: the job table as it is now (read-only)."""
    try:
        return json.loads((Path(directory) / "state.json").read_text())
    except FileNotFoundError:
        return {"next_id": 1, "submissions": 0, "jobs": {}}


def directives(script_text: str, prefix: str) -> list[str]:
    """Arguments from the script's directive lines (``#PBS -N x``), up to the first command,
    the way the real submit commands read them."""
    args: list[str] = []
    for line in script_text.splitlines()[1:]:
        stripped = line.strip()
        if stripped.startswith(prefix):
            args += shlex.split(stripped[len(prefix) :], comments=False)
        elif stripped and not stripped.startswith("#"):
            break
    return args


def new_job(data: dict, *, first_id: int = 1, **fields: object) -> dict:
    """Record a submission. ``script`` is run with /bin/sh from ``cwd``."""
    job_id = max(int(data["next_id"]), first_id)
    data["next_id"] = job_id + 1
    data["submissions"] += 1
    job = {
        "id": job_id,
        "name": "",
        "queue": "",
        "account": "",
        "owner": owner(),
        "state": "queued",
        "held": False,
        "submitted": time.time(),
        "started": None,
        "ended": None,
        "script": "",
        "cwd": os.getcwd(),
        "out": os.devnull,
        "err": os.devnull,
        "nodes": 1,
        "ppn": 1,
        "walltime": None,
        "exit_code": None,
        "cause": "",
        "vanished": False,
        "extra": {},
    }
    job.update(fields)
    data["jobs"][str(job_id)] = job
    return job


def save_script(job: dict, text: str) -> None:
    """A script given on stdin (LSF) is kept in the spool, as the real scheduler does."""
    path = sched_dir() / "jobs" / f"{job['id']}.sh"
    path.write_text(text)
    job["script"] = str(path)


def _files(job: dict) -> tuple[Path, Path]:
    base = sched_dir() / "jobs"
    return base / f"{job['id']}.pid", base / f"{job['id']}.exit"


def _pid(job: dict) -> int | None:
    return read_int(_files(job)[0])


def alive(job: dict) -> bool:
    """Whether the job's process (the wrapper and its script) still runs."""
    return alive_run(_files(job)[0], MARK)


def _exit_code(job: dict) -> int | None:
    return read_int(_files(job)[1])


def _start(job: dict, env: dict[str, str]) -> None:
    pid_file, exit_file = _files(job)
    cwd = job["cwd"] if os.path.isdir(job["cwd"]) else "/"
    files = (job["script"], job["out"], job["err"])
    start_detached(MARK, pid_file, exit_file, files, cwd=cwd, env=env)
    job["state"], job["started"] = "running", time.time()


def _kill(job: dict) -> None:
    """SIGKILL the job's process group: no exit status gets written."""
    if job["state"] != "running":
        return
    deadline = time.monotonic() + START_GRACE
    while _pid(job) is None and _exit_code(job) is None and time.monotonic() < deadline:
        time.sleep(0.01)  # just started: the wrapper has not written its pid yet
    if alive(job):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(_pid(job), signal.SIGKILL)


def _end(job: dict, exit_code: int | None, cause: str = "") -> None:
    job["state"], job["ended"] = "done", time.time()
    job["exit_code"], job["cause"] = exit_code, cause


def end_by_fault(job: dict, cause: str) -> None:
    _kill(job)
    _end(job, None, cause)


def requeue(job: dict) -> None:
    """Back to the queue to run again under the same id (a scheduler's own rerun)."""
    for path in _files(job):
        path.unlink(missing_ok=True)
    job["extra"]["starts"] = job["extra"].get("starts", 0) + (1 if job["started"] else 0)
    job.update(state="queued", started=None, ended=None, exit_code=None, cause="")


def cancel(job: dict) -> None:
    _kill(job)
    _end(job, None, "cancelled")


def tick(data: dict, job_env=None) -> None:  # type: ignore[no-untyped-def]
    """One scheduler cycle: apply faults, start queued jobs, see which ended."""
    active = faults()
    for job in data["jobs"].values():
        if job["vanished"] or job["state"] == "done":
            continue
        if active.get("vanish"):
            _kill(job)
            job["vanished"] = True
            continue
        killer = next((cause for key, cause in KILL_FAULTS if active.get(key)), None)
        if job["state"] == "queued":
            if active.get("hold_queue") or job["held"]:
                continue
            if killer:  # it would start on a node that is failing: it fails at once
                job["started"] = time.time()
                _end(job, None, killer)
                continue
            _start(job, job_env(job) if job_env else {})
            continue
        if killer:
            end_by_fault(job, killer)
            continue
        code = _exit_code(job)
        if code is not None:
            if time.time() - _files(job)[1].stat().st_mtime >= end_latency():
                _end(job, code)
        elif not alive(job):
            if _pid(job) is None and time.time() - job["started"] < START_GRACE:
                continue  # starting
            code = _exit_code(job)  # ended between the two looks
            _end(job, code, "" if code is not None else "killed")


def node_count() -> int:
    return int(os.environ.get("FAKE_NODES", "1"))


def occupancy(data: dict) -> list[dict | None]:
    """Each node's running job (None: idle), running jobs taking nodes in the order they
    started; a node-failure fault leaves no node to hand out."""
    nodes: list[dict | None] = [None] * node_count()
    free = iter(range(len(nodes)))
    running = sorted(
        (j for j in visible(data) if j["state"] == "running"), key=lambda j: j["started"]
    )
    for job in running:
        for _ in range(job["nodes"]):
            index = next(free, None)
            if index is not None:
                nodes[index] = job
    return nodes


def unreachable(text: str, code: int) -> None:
    """The listing fails in the tool's words when the fault file says so."""
    if faults().get("unreachable"):
        fail(text, code)


def visible(data: dict) -> list[dict]:
    return [j for j in data["jobs"].values() if not j["vanished"]]


def kill_all(directory: Path) -> None:
    """For tests: end every job process the fakes started in ``directory``."""
    for job in load(directory)["jobs"].values():
        pid_file = Path(directory) / "jobs" / f"{job['id']}.pid"
        pid = read_int(pid_file)
        if pid is not None and alive_run(pid_file, MARK):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)


def main(tools: dict, argv: list[str]) -> None:
    """Dispatch on the executable's name: ``tools[name](args)``."""
    tool = os.path.basename(argv[0])
    hang_if_asked(tool)
    tools[tool](argv[1:])
