"""Finding failures and the words users read: ``--state failed`` for any failure state in
``argo ls`` and ``job ls`` (the installed command), unknown states list the valid ones, and
no text a user reads cites the sources by an internal number."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from edgeceleryapp.state_store import move_argo, move_subjob
from tests.helpers import ROOT, argo_message, balsam_message
from tests.test_batch_logs import edgecelery
from workflows.intake import submit_argo, submit_balsam


def ids(output: str) -> list[int]:
    return [int(line.split()[0]) for line in output.splitlines()[1:]]


def test_state_failed_lists_every_kind_of_failure_and_nothing_else(env):
    ok, staged, advanced = (submit_argo(argo_message(f"j{i}"), start=False) for i in range(3))
    assert move_argo(staged, "CREATED", "STAGED_IN_FAILED", "input missing")
    assert move_argo(advanced, "CREATED", ["STAGED_IN", "SUBJOB_SUBMITTED_FAILED"], "no site")
    listed = edgecelery("argo", "ls", "--state", "failed")
    assert listed.returncode == 0, listed.stderr
    assert ids(listed.stdout) == [advanced, staged]
    assert ok not in ids(listed.stdout)

    fine = submit_balsam(balsam_message(), start=False)
    broken = submit_balsam(balsam_message(), start=False)
    assert move_subjob(broken, "CREATED", ["STAGED_IN_FAILED"], "input missing")
    jobs = edgecelery("job", "ls", "--state", "FAILED")
    assert broken in ids(jobs.stdout) and fine not in ids(jobs.stdout)


def test_an_unknown_state_lists_the_valid_ones(env):
    result = edgecelery("argo", "ls", "--state", "broken")
    assert result.returncode == 2
    assert "unknown argo state 'broken'" in result.stderr
    for name in ("CREATED", "SUBJOB_SUBMITTED", "HISTORY", "KILLED", "X_FAILED", "FAILED means"):
        assert name in result.stderr
    result = edgecelery("job", "ls", "--state", "nope")
    assert result.returncode == 2 and "JOB_FINISHED" in result.stderr


CITATION = re.compile(r"\bseeds? ?0\d\d\b|\bthe seeds?'s?\b|\bseed figure", re.I)


def test_no_user_facing_text_cites_a_source_by_number():
    tracked = subprocess.run(
        ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    readable = [
        p
        for p in tracked
        if not p.startswith("tests/") and p.endswith((".py", ".md", ".html", ".toml", ".js"))
    ]
    found = [
        f"{p}:{n}: {line.strip()}"
        for p in readable
        for n, line in enumerate((ROOT / p).read_text().splitlines(), 1)
        if CITATION.search(line)
    ]
    assert not found, "\n".join(found)


def test_help_and_task_descriptions_name_the_paper_not_a_number(env):
    from edgeceleryapp.celery import app

    texts = [edgecelery(*args, "-h").stdout for args in ([], ["job"], ["argo"], ["job", "logs"])]
    ours = [task for name, task in app.tasks.items() if not name.startswith("celery.")]
    texts += [task.__doc__ or "" for task in ours]
    assert not [t for t in texts if CITATION.search(t)]
    assert "HUST'17" in app.tasks["site.stage_in"].__doc__


def test_readme_names_the_paper_by_its_title():
    assert '"An Edge Service for Managing HPC Workflows"' in Path(ROOT / "README.md").read_text()
