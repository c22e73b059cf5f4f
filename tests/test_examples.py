"""Every job message under examples/jobs/ is accepted, unchanged, by the installed command
against edgecelery.example.toml (its site theta), with the applications it names registered:
the examples a user copies cannot drift from the schema or the example settings."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
JOBS = sorted((ROOT / "examples" / "jobs").glob("*.json"))
EDGECELERY = str(Path(sys.executable).parent / "edgecelery")


@pytest.fixture(scope="module")
def example_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The example settings with a database of the test's own, every application the
    examples name registered at theta."""
    root = tmp_path_factory.mktemp("examples")
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGECELERY_")}
    env["EDGECELERY_CONFIG"] = str(ROOT / "edgecelery.example.toml")
    env["EDGECELERY_DATABASE_URL"] = f"sqlite:///{root / 'edgecelery.db'}"
    env["EDGECELERY_BROKER_URL"] = "memory://"
    subprocess.run([EDGECELERY, "db", "init"], env=env, check=True, capture_output=True)
    names = set()
    for path in JOBS:
        data = json.loads(path.read_text())
        names |= {sj["application"] for sj in data.get("subjobs", [data])}
    for name in sorted(names):
        subprocess.run(
            [EDGECELERY, "app", "add", name, "--site", "theta", "--executable", "/bin/hostname"],
            env=env,
            check=True,
            capture_output=True,
        )
    return env


def test_there_are_the_three_examples():
    assert {p.name for p in JOBS} >= {
        "argo-linear.json",
        "balsam-only.json",
        "argo-every-field.json",
    }


def test_the_every_field_example_uses_every_field():
    from workflows.schemas import ArgoJobMessage, BalsamJobMessage

    data = json.loads((ROOT / "examples" / "jobs" / "argo-every-field.json").read_text())
    assert set(data) == set(ArgoJobMessage.model_fields)
    used = set().union(*(set(sj) for sj in data["subjobs"]))
    # argo_job_id is the service's to set inside an Argo job (it names the Argo job); parents
    # make a graph job, shown by graph.json; sites is the alternative to site (candidate sites,
    # README "Candidate sites"), which the example settings' one site cannot show.
    assert used == set(BalsamJobMessage.model_fields) - {"argo_job_id", "parents", "sites"}


def test_the_graph_example_is_a_diamond():
    data = json.loads((ROOT / "examples" / "jobs" / "graph.json").read_text())
    assert [sj["parents"] for sj in data["subjobs"]] == [[], ["gen"], ["gen"], ["left", "right"]]


ARGO_JOBS = [p for p in JOBS if p.name.startswith("argo-") or p.name == "graph.json"]


@pytest.mark.parametrize("path", ARGO_JOBS, ids=[p.name for p in ARGO_JOBS])
def test_argo_examples_validate_against_the_example_settings(example_env, path):
    done = subprocess.run(
        [EDGECELERY, "argo", "validate", str(path)],
        env=example_env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("valid: argo job")
    assert "not checked" not in done.stderr, "the applications were checked"


def test_the_balsam_example_is_accepted(example_env):
    done = subprocess.run(
        [
            EDGECELERY,
            "job",
            "add",
            "--no-start",
            str(ROOT / "examples" / "jobs" / "balsam-only.json"),
        ],
        env=example_env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr


SPAWNING = ROOT / "examples" / "spawning"


def _run(script: str, cwd: Path, *args: str, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        [sys.executable, str(SPAWNING / script), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_the_spawning_example_runs_by_hand(tmp_path):
    """examples/spawning/ as the service runs it, in folders here: gen writes the matrices,
    its postprocess spawns an eigen child per matrix and a reduce after them all; each
    eigen takes its matrix from its config script; reduce sorts what they found."""
    gen = tmp_path / "gen"
    gen.mkdir()
    _run("gen.py", gen)
    env = {**os.environ, "EDGECELERY_WORKDIR": str(gen), "EDGECELERY_SUBJOB_NAME": "gen"}
    _run("spawn.py", gen, env=env)
    children = json.loads((gen / "children.json").read_text())
    eigens = [f"eigen{i}" for i in range(4)]
    assert [c["name"] for c in children] == [*eigens, "reduce"]
    assert [c.get("parents") for c in children] == [None] * 4 + [eigens]
    reduce = tmp_path / "reduce"
    for child in children[:4]:
        folder = reduce / child["name"]
        folder.mkdir(parents=True)
        (args,) = json.loads(_run("eigen_args.py", folder, str(gen / child["config_file"])))
        _run("eigen.py", folder, args)
    _run("reduce.py", reduce)
    found = json.loads((reduce / "eigenvalues.json").read_text())
    assert found == sorted(found) and len(found) == 4
    assert all(v > 0 for v in found)
