"""Small builders shared by the tests: application scripts, messages, step drivers."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

from sqlalchemy import func, select

from edgeceleryapp import applications
from edgeceleryapp.db import session_scope
from edgeceleryapp.devstack import wait_for
from edgeceleryapp.models import ArgoJob, JobEvent, SubJob
from tasks.poll import poll_site

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


def balsam_message(site: str = "alpha", app: str = "echo", **fields: object) -> dict:
    return {"name": "test job", "site": site, "application": app, **fields}


def batch_name(subjob_id: int, attempt: int = 1) -> str:
    """The batch job name of a subjob attempt in the configured deployment."""
    from edgeceleryapp.batch_names import instance_tag

    return f"ec{instance_tag()}_{subjob_id}a{attempt}"


def count(model: type) -> int:
    with session_scope() as s:
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
    """Drive the site poller (as beat would) until the batch job has ended."""

    def ended() -> SubJob | None:
        poll_site(subjob(subjob_id).site)
        current = subjob(subjob_id)
        return current if current.state not in ("SUBMITTED", "QUEUED", "RUNNING") else None

    return wait_for(ended, timeout, f"batch job of subjob {subjob_id} to end", interval=0.1)
