"""Small builders shared by the tests: application scripts, messages, step drivers."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from edgeceleryapp import applications
from edgeceleryapp.db import read_scope, session_scope
from edgeceleryapp.devstack import wait_for
from edgeceleryapp.errors import TransientError
from edgeceleryapp.models import ArgoJob, JobEvent, SubJob
from tasks import site as site_tasks
from tasks.poll import poll_site
from tasks.retry_policy import Busy, Stop
from workflows.intake import submit_balsam

ROOT = Path(__file__).resolve().parents[1]

# The expected timelines, written out here rather than read from edgeceleryapp.states, so a
# change to the state machine shows up as a failing test.
SUBJOB_PATH = [
    "CREATED",
    "STAGED_IN",
    "PREPROCESSED",
    "SUBMITTED",
    "QUEUED",
    "RUNNING",
    "EXECUTION_FINISHED",
    "POSTPROCESSED",
    "STAGED_OUT",
    "JOB_FINISHED",
]
ARGO_LOOP = [
    "SUBJOB_SUBMITTED",
    "SUBJOB_IN_PREPROCESSED",
    "SUBJOB_QUEUED",
    "SUBJOB_RUNNING",
    "SUBJOB_RUN_FINISHED",
    "SUBJOB_IN_POSTPROCESSED",
    "SUBJOB_COMPLETED",
    "SUBJOB_INCREMENTED",
]
# Where an Argo job stops moving by itself: done, or any step's failure state.
ARGO_ENDS = {
    "HISTORY",
    *(f"{s}_FAILED" for s in ["STAGED_IN", *ARGO_LOOP, "SUBJOBS_COMPLETED", "STAGED_OUT"]),
}


def script(path: Path, body: str, python: bool = True) -> str:
    """Write an executable script; Python ones run under this interpreter."""
    head = f"#!{sys.executable}\n" if python else "#!/bin/sh\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(head + textwrap.dedent(body))
    path.chmod(0o755)
    return str(path)


def echo_app(root: Path, site: str, name: str = "echo", exit_code: int = 0) -> None:
    """An application that records its arguments and each run, then exits ``exit_code``.

    Its config_script turns each line of the config file into one argument.
    """
    bin_dir = root / "apps" / name
    exe = script(
        bin_dir / "app.py",
        f"""
        import json, sys
        with open("args.json", "w") as fh:
            json.dump(sys.argv[1:], fh)
        with open("runs.log", "a") as fh:
            fh.write("run\\n")
        with open("result.txt", "w") as fh:
            fh.write("ok\\n")
        sys.exit({exit_code})
        """,
    )
    cfg = script(
        bin_dir / "config.py",
        """
        import json, sys
        lines = open(sys.argv[1]).read().splitlines() if len(sys.argv) > 1 else []
        print(json.dumps(lines))
        """,
    )
    applications.add_app(name, site, exe, config_script=cfg)


def gated_app(root: Path, exit_code: int = 0, patience: float = 60) -> None:
    """An application at site alpha that runs until a file named ``go`` appears in its work
    directory (or ``patience`` seconds pass), records the run and exits ``exit_code``."""
    exe = script(
        root / "apps" / "gated" / "app.py",
        f"""
        import os, sys, time
        deadline = time.monotonic() + {patience}
        while not os.path.exists("go") and time.monotonic() < deadline:
            time.sleep(0.02)
        with open("runs.log", "a") as fh:
            fh.write("run\\n")
        sys.exit({exit_code})
        """,
    )
    applications.add_app("gated", "alpha", exe)


def slow_preprocess_app(root: Path, data: Path, site: str) -> tuple[Path, Path]:
    """An application ``slowpre`` at ``site`` whose preprocess step notes each start in the
    first file returned and then waits (at most five minutes) for the second to appear; the
    application itself notes each run in ``runs.log``. For killing a worker mid-step."""
    started, go = data / "pre-started", data / "pre-go"
    pre = script(
        root / "apps" / "slowpre" / "pre.py",
        f"""
        import os, time
        open({str(started)!r}, "a").write("started\\n")
        deadline = time.time() + 300
        while not os.path.exists({str(go)!r}) and time.time() < deadline:
            time.sleep(0.05)
        """,
    )
    exe = script(root / "apps" / "slowpre" / "app.py", 'open("runs.log", "a").write("run\\n")\n')
    applications.add_app("slowpre", site, exe, preprocess=pre)
    return started, go


def balsam_message(site: str = "alpha", app: str = "echo", **fields: object) -> dict:
    """A valid Balsam job message: one run of ``app`` at ``site``."""
    return {"name": "test job", "site": site, "application": app, **fields}


def argo_message(
    name: str = "chain", sites: tuple[str, ...] = ("alpha", "beta"), app: str = "echo", **fields
) -> dict:
    """A valid Argo job message: one subjob of ``app`` at each site, named ``name-0``, ...;
    ``fields`` add to the message or replace its parts (``subjobs`` too)."""
    return {
        "name": name,
        "subjobs": [
            {"name": f"{name}-{i}", "site": site, "application": app}
            for i, site in enumerate(sites)
        ],
        **fields,
    }


# The user of the HUST'17 paper's Table 3, as the fields of an Argo job message.
JOHNDOE = {"username": "johndoe", "email": "johndoe@doe.gov"}


def input_dir(env, files: dict[str, str]) -> str:
    """A local input folder holding ``files`` (name -> text); its URL."""
    folder = env.data / "in"
    folder.mkdir(exist_ok=True)
    for name, text in files.items():
        (folder / name).write_text(text)
    return f"local://{folder}"


def submit_config_job(env) -> int:
    """A Balsam job of the echo app at alpha, not started: its config file (two lines, two
    arguments) in a local input folder, its output to the local folder ``out``."""
    return submit_balsam(
        balsam_message(
            config_file="app.ini",
            input_url=input_dir(env, {"app.ini": "--events\n100\n"}),
            output_url=f"local://{env.data / 'out'}",
        ),
        start=False,
    )


def run_to_submitted(subjob_id: int) -> None:
    """Run a subjob's site steps up to its batch submission, as its site worker would."""
    for step in ("stage_in", "preprocess", "submit"):
        getattr(site_tasks, step).apply(args=(subjob_id,))


def run_to_end(subjob_id: int) -> SubJob:
    """Run every site step of a subjob, the poller in between; the subjob at the end."""
    run_to_submitted(subjob_id)
    poll_until_ended(subjob_id)
    finish_after_batch(subjob_id)
    return subjob(subjob_id)


def finish_after_batch(subjob_id: int) -> None:
    """The site steps after the batch job: post-processing and stage out."""
    for step in ("postprocess", "stage_out"):
        getattr(site_tasks, step).apply(args=(subjob_id,))


def at_once(workers: int, work: Callable[[int], object]) -> None:
    """Run ``work(0)`` ... ``work(workers - 1)`` on threads released together; wait for all."""
    barrier = threading.Barrier(workers)

    def run(i: int) -> None:
        barrier.wait()
        work(i)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def step_at_once(step: str, subjob_id: int, workers: int, tokens: bool = False) -> list[str]:
    """Run one site step of a subjob from ``workers`` threads at once (with ``tokens``, each
    as its own delivery: tokens task-0, task-1, ...); what each was told: "ok", "busy"
    (another execution held the subjob's lease, so this one ended quietly; or a TransientError,
    after which its retry comes later) or "ended" (Stop: another one did the step while it
    waited, so it ends quietly)."""
    outcomes: list[str] = []

    def run(i: int) -> None:
        try:
            site_tasks.execute(step, subjob_id, token=f"task-{i}" if tokens else "")
            outcomes.append("ok")
        except (Busy, TransientError):
            outcomes.append("busy")
        except Stop:
            outcomes.append("ended")

    at_once(workers, run)
    return outcomes


def start_service(name: str, timeout: float) -> dict[str, str]:
    """Start (or find running) one of the project's test services, ``scripts/<name>.sh``;
    the environment its tools need (the ``export`` line it ends with)."""
    done = subprocess.run(
        [str(ROOT / "scripts" / f"{name}.sh"), "start"],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    line = done.stdout.strip().splitlines()[-1]
    assert line.startswith("export "), done.stdout
    return dict(item.split("=", 1) for item in line.removeprefix("export ").split())


def state_changes(events: list[dict], subjob_id: int | None) -> list[str]:
    """The states a record went through, from ``argo show --json``'s events (``subjob_id``
    None: the Argo job's own), leaving out the notes that keep the state (re-drives)."""
    return [
        e["to_state"]
        for e in events
        if e["subjob_id"] == subjob_id and e["from_state"] != e["to_state"]
    ]


def captured_cancels(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The subjobs whose sites were sent ``site.cancel``, recorded instead of sent."""
    cancels: list[int] = []
    monkeypatch.setattr(
        "workflows.chains.cancel_batch",
        lambda job: type("S", (), {"apply_async": lambda self: cancels.append(job.id)})(),
    )
    return cancels


def batch_name(subjob_id: int, attempt: int = 1) -> str:
    """The batch job name of a subjob attempt in the configured deployment."""
    from edgeceleryapp.batch_names import instance_tag

    return f"ec{instance_tag()}_{subjob_id}a{attempt}"


def count(model: type) -> int:
    with read_scope() as s:
        return s.scalar(select(func.count()).select_from(model))


def subjob(subjob_id: int) -> SubJob:
    with session_scope() as s:
        return s.get(SubJob, subjob_id)


def argo(argo_id: int) -> ArgoJob:
    with session_scope() as s:
        return s.get(ArgoJob, argo_id)


def subjob_states(subjob_id: int) -> list[str]:
    with session_scope() as s:
        return list(
            s.scalars(
                select(JobEvent.to_state)
                .where(JobEvent.subjob_id == subjob_id)
                .order_by(JobEvent.id)
            )
        )


def argo_states(argo_id: int) -> list[str]:
    with session_scope() as s:
        return list(
            s.scalars(
                select(JobEvent.to_state)
                .where(JobEvent.argo_job_id == argo_id, JobEvent.subjob_id.is_(None))
                .order_by(JobEvent.id)
            )
        )


def poll_until_ended(subjob_id: int, timeout: float = 30) -> SubJob:
    """Drive the site poller (as the site worker's clock would) until the batch job has ended."""

    def ended() -> SubJob | None:
        poll_site(subjob(subjob_id).site)
        current = subjob(subjob_id)
        return current if current.state not in ("SUBMITTED", "QUEUED", "RUNNING") else None

    return wait_for(ended, timeout, f"batch job of subjob {subjob_id} to end", interval=0.1)


def publish_raw(
    conn: Any,
    queue: Any,
    body: bytes,
    content_type: str,
    message_id: Any,
    headers: dict[str, Any] | None = None,
) -> None:
    """A message exactly as a careless or hostile producer might send it: the body as bytes,
    the content type, message id and headers it chose."""
    with conn.Producer() as producer:
        producer.publish(
            body,
            exchange=queue.exchange,
            routing_key=queue.routing_key,
            declare=[queue],
            content_type=content_type,
            content_encoding="binary",
            headers=headers,
            message_id=message_id,
        )


def _parent_links() -> dict[int, int]:
    """Every live process and its parent, from /proc."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # The command name is in parentheses and may hold spaces: the parent follows ") S ".
        parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    return parents


def children_of(pid: int) -> set[int]:
    return {p for p, parent in _parent_links().items() if parent == pid}


def descendants(pid: int) -> set[int]:
    """Every process below ``pid`` (workers run in sessions of their own, so a process group
    would miss them; the parent links do not)."""
    parents = _parent_links()
    found: set[int] = set()
    frontier = {pid}
    while frontier:
        children = {p for p, parent in parents.items() if parent in frontier}
        found |= children
        frontier = children
    return found
