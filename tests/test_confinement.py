"""Paths confined by construction: each attack of issue 12 reproduced against the steps and the
plug-ins. A symbolic link is never followed out of a root (in an input folder, as a stage-out
target, inside a work directory); a job's URLs name only its site's transfer roots and its own
Argo job's staging directory, never another job's directory nor a control directory (refused
at intake naming the field, and again by the transfer step); remote hosts come from an
allowlist that is empty by default."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest
from sqlalchemy import update

from backends.batchscript import EXIT_CODE_FILE
from backends.transfers import TransferContext, transfer_for
from edgeceleryapp import job_control
from edgeceleryapp.db import session_scope
from edgeceleryapp.errors import (
    ConfigurationError,
    PermanentError,
    UnsafePath,
    ValidationFailed,
)
from edgeceleryapp.models import SubJob
from edgeceleryapp.settings import TransferSettings, get_settings, load_settings
from tasks import site
from tasks.site_steps import workdir_of
from tests.helpers import argo_message, balsam_message, echo_app, subjob
from workflows.intake import submit_argo, submit_balsam


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A directory outside every root of the test deployment, holding a secret."""
    folder = tmp_path / "outside"
    folder.mkdir()
    (folder / "secret.txt").write_text("not yours\n")
    return folder


def ctx(root: Path, **settings) -> TransferContext:
    return TransferContext(roots=[root], settings=TransferSettings(**settings), token="t1")


# --- links ---------------------------------------------------------------------------------


def test_a_link_in_an_input_folder_is_refused_and_nothing_outside_is_copied(env, outside):
    echo_app(env.root, "alpha")
    folder = env.data / "in"
    folder.mkdir()
    (folder / "good.txt").write_text("fine\n")
    (folder / "zz-secret.txt").symlink_to(outside / "secret.txt")
    job_id = submit_balsam(balsam_message(input_url=f"local://{folder}"), start=False)
    site.stage_in.apply(args=(job_id,))
    failed = subjob(job_id)
    assert failed.state == "STAGED_IN_FAILED"
    assert f"{folder / 'zz-secret.txt'} is a symbolic link" in failed.state_message
    assert not list(workdir_of(failed).rglob("*secret*"))


def test_a_linked_directory_in_an_input_folder_is_not_followed(tmp_path, outside):
    root = tmp_path / "root"
    (root / "in").mkdir(parents=True)
    (root / "in" / "sub").symlink_to(outside, target_is_directory=True)
    url = f"local://{root / 'in'}"
    with pytest.raises(UnsafePath, match="is a symbolic link; links are not followed"):
        transfer_for(url, ctx(root)).download(url, root / "work")
    assert not (root / "work" / "sub").exists()


def test_a_url_naming_a_link_is_refused(tmp_path, outside):
    root = tmp_path / "root"
    root.mkdir()
    (root / "in").symlink_to(outside, target_is_directory=True)
    (root / "one.txt").symlink_to(outside / "secret.txt")
    for name in ("in", "in/secret.txt", "one.txt"):
        url = f"local://{root / name}"
        with pytest.raises(UnsafePath, match="is a symbolic link"):
            transfer_for(url, ctx(root)).download(url, root / "work")
    assert not (root / "work").exists()


def posted_job(env, output_url: str, files: dict[str, str]) -> int:
    """A job of the echo app at alpha that ran: ``files`` in its work directory, its state
    POSTPROCESSED, so that stage-out is owed."""
    echo_app(env.root, "alpha")
    job_id = submit_balsam(balsam_message(output_url=output_url), start=False)
    site.stage_in.apply(args=(job_id,))
    workdir = workdir_of(subjob(job_id))
    for name, text in files.items():
        (workdir / name).parent.mkdir(parents=True, exist_ok=True)
        (workdir / name).write_text(text)
    with session_scope() as s:
        s.execute(update(SubJob).where(SubJob.id == job_id).values(state="POSTPROCESSED"))
    return job_id


def test_a_linked_directory_as_stage_out_target_is_refused(env, outside):
    (env.data / "out").symlink_to(outside, target_is_directory=True)
    job_id = posted_job(env, f"local://{env.data / 'out'}", {"result.txt": "ok\n"})
    site.stage_out.apply(args=(job_id,))
    failed = subjob(job_id)
    assert failed.state == "STAGED_OUT_FAILED"
    assert "is a symbolic link" in failed.state_message
    assert sorted(p.name for p in outside.iterdir()) == ["secret.txt"]


def test_a_linked_directory_inside_the_stage_out_target_is_refused(env, outside):
    (env.data / "out").mkdir()
    (env.data / "out" / "sub").symlink_to(outside, target_is_directory=True)
    job_id = posted_job(env, f"local://{env.data / 'out'}", {"sub/result.txt": "ok\n"})
    site.stage_out.apply(args=(job_id,))
    assert subjob(job_id).state == "STAGED_OUT_FAILED"
    assert f"{env.data / 'out' / 'sub'} is a symbolic link" in subjob(job_id).state_message
    assert sorted(p.name for p in outside.iterdir()) == ["secret.txt"]


def test_a_link_in_the_work_directory_is_not_staged_out(env, outside):
    job_id = posted_job(env, f"local://{env.data / 'out'}", {"result.txt": "ok\n"})
    (workdir_of(subjob(job_id)) / "leak.txt").symlink_to(outside / "secret.txt")
    site.stage_out.apply(args=(job_id,))
    assert subjob(job_id).state == "STAGED_OUT_FAILED"
    assert "leak.txt is a symbolic link" in subjob(job_id).state_message
    assert not (env.data / "out" / "leak.txt").exists()


def test_a_link_where_a_file_would_land_is_refused_not_written_through(tmp_path, outside):
    root = tmp_path / "root"
    (root / "src").mkdir(parents=True)
    (root / "src" / "f.txt").write_text("new\n")
    (root / "dst").mkdir()
    (root / "dst" / "f.txt").symlink_to(outside / "secret.txt")
    url = f"local://{root / 'dst'}"
    with pytest.raises(UnsafePath, match=r"f\.txt is a symbolic link"):
        transfer_for(url, ctx(root)).upload(root / "src", url)
    assert (outside / "secret.txt").read_text() == "not yours\n"


def test_a_fifo_in_a_tree_is_refused_not_read(tmp_path):
    """Opening a FIFO for reading blocks until a writer comes: the worker would hang."""
    (tmp_path / "src").mkdir()
    os.mkfifo(tmp_path / "src" / "pipe")
    url = f"local://{tmp_path / 'dst'}"
    outcome: list[BaseException | None] = []

    def copy() -> None:
        try:
            transfer_for(url, ctx(tmp_path)).upload(tmp_path / "src", url)
            outcome.append(None)
        except PermanentError as exc:
            outcome.append(exc)

    worker = threading.Thread(target=copy, daemon=True)
    worker.start()
    worker.join(timeout=30)
    assert not worker.is_alive(), "the copy hangs on the FIFO"
    assert isinstance(outcome[0], PermanentError) and "not a regular file" in str(outcome[0])


# --- another job's directory -------------------------------------------------------------


def test_a_url_naming_another_jobs_staging_directory_is_refused_at_intake(env):
    victim = submit_argo(argo_message("victim"), start=False)
    staging = get_settings().argo.staging_url_for
    message = argo_message("thief")
    message["subjobs"][1]["input_url"] = staging(str(victim), "sub0")
    message["output_url"] = staging(str(victim), "output")
    with pytest.raises(ValidationFailed) as refused:
        submit_argo(message, start=False)
    fields = dict(refused.value.errors)
    assert sorted(fields) == ["output_url", "subjobs[1].input_url"]
    assert "names the Argo staging area, which holds other jobs' files" in fields["output_url"]


def test_a_url_naming_a_control_directory_or_a_work_directory_is_refused_at_intake(env):
    victim = submit_balsam(balsam_message(), start=False)
    workdir = env.site_workdir("alpha") / "jobs" / str(victim)
    message = argo_message("thief")
    message["subjobs"][0]["output_url"] = f"local://{workdir / '.edgecelery'}"
    message["subjobs"][1]["input_url"] = f"local://{workdir}"
    message["subjobs"][1]["output_url"] = f"local://{env.data / 'x' / '.edgecelery' / 'y'}"
    with pytest.raises(ValidationFailed) as refused:
        submit_argo(message, start=False)
    fields = dict(refused.value.errors)
    assert "control directory (.edgecelery)" in fields["subjobs[0].output_url"]
    assert "site alpha's work directory" in fields["subjobs[1].input_url"]
    assert "control directory (.edgecelery)" in fields["subjobs[1].output_url"]


def test_a_loopback_server_url_into_a_work_directory_is_refused(env):
    workdir = env.site_workdir("beta")
    message = argo_message("thief")
    message["subjobs"][0]["input_url"] = f"gsiftp://127.0.0.1:2811{workdir}/jobs/1"
    with pytest.raises(ValidationFailed, match=r"subjobs\[0\]\.input_url: .*site beta's work"):
        submit_argo(message, start=False)


def test_a_forged_exit_code_cannot_be_staged_into_another_jobs_control_directory(env):
    """Issue 12's attack: job B stages out into job A's .edgecelery/, so that the poller
    reads B's file as A's exit code. A record with such a URL (written before the intake
    check, or by hand) is refused again by the transfer step, and nothing is written."""
    victim = submit_balsam(balsam_message(), start=False)
    site.stage_in.apply(args=(victim,))
    control = workdir_of(subjob(victim)) / EXIT_CODE_FILE
    thief = posted_job(env, f"local://{env.data / 'out'}", {"exitcode": "0\n"})
    with session_scope() as s:
        s.get(SubJob, thief).output_url = f"local://{control.parent}"
    site.stage_out.apply(args=(thief,))
    failed = subjob(thief)
    assert failed.state == "STAGED_OUT_FAILED"
    assert "output_url:" in failed.state_message
    assert "control directory" in failed.state_message
    assert not control.exists()


def test_another_jobs_staging_directory_is_refused_at_stage_in(env):
    echo_app(env.root, "alpha")
    victim = submit_argo(argo_message("victim"), start=False)
    own = submit_argo(argo_message("own", sites=("alpha",)), start=False)
    staging = get_settings().argo.staging_dir
    (staging / str(victim) / "sub0").mkdir(parents=True)
    (staging / str(victim) / "sub0" / "data.txt").write_text("victim's\n")
    with session_scope() as s:
        (mine,) = s.query(SubJob).filter_by(argo_job_id=own).all()
        mine.input_url = get_settings().argo.staging_url_for(str(victim), "sub0")
        mine_id = mine.id
    site.stage_in.apply(args=(mine_id,))
    assert subjob(mine_id).state == "STAGED_IN_FAILED"
    assert "input_url:" in subjob(mine_id).state_message
    assert not (workdir_of(subjob(mine_id)) / "data.txt").exists()


def test_a_job_reads_its_own_staging_directory(env):
    echo_app(env.root, "alpha")
    argo_id = submit_argo(argo_message("own", sites=("alpha",)), start=False)
    staging = get_settings().argo.staging_dir / str(argo_id) / "input"
    staging.mkdir(parents=True)
    (staging / "data.txt").write_text("mine\n")
    with session_scope() as s:
        (mine,) = s.query(SubJob).filter_by(argo_job_id=argo_id).all()
        mine.input_url = get_settings().argo.staging_url_for(str(argo_id), "input")
        mine_id = mine.id
    site.stage_in.apply(args=(mine_id,))
    assert subjob(mine_id).state == "STAGED_IN"
    assert (workdir_of(subjob(mine_id)) / "data.txt").read_text() == "mine\n"


def test_altering_a_url_to_another_jobs_directory_is_refused(env):
    victim = submit_argo(argo_message("victim"), start=False)
    job_id = submit_balsam(balsam_message(), start=False)
    other = get_settings().argo.staging_url_for(str(victim), "output")
    with pytest.raises(ValidationFailed, match=r"output_url: .*the Argo staging area"):
        job_control.alter_subjob(job_id, {"output_url": other})
    assert subjob(job_id).output_url is None


def test_the_most_specific_area_decides_and_a_fence_wins_a_tie(tmp_path):
    from backends.transfers import scope as transfer_scope  # new in issue 12

    stage = transfer_scope.Area("", transfer_scope.PurePosixPath(tmp_path / "argo"), "staging")
    own = transfer_scope.Area("", stage.path / "7", "own")
    scope = transfer_scope.Scope([tmp_path / "argo", tmp_path / "data"], [own], [stage])
    assert scope.problem(f"local://{tmp_path / 'argo' / '7' / 'sub0'}") is None
    assert "names staging" in scope.problem(f"local://{tmp_path / 'argo' / '8' / 'sub0'}")
    assert "names staging" in scope.problem(f"local://{tmp_path / 'argo'}")  # the tie
    assert scope.problem(f"local://{tmp_path / 'data' / 'x'}") is None
    assert "'..'" in scope.problem(f"local://{tmp_path / 'data' / '..' / 'argo' / '8'}")
    assert "'..'" in scope.problem(f"local://{tmp_path / 'data'}/%2e%2e/argo/8")
    assert "outside the directories" in scope.problem("file:///etc/passwd")
    assert "name no host" in scope.problem("file://elsewhere/etc/passwd")


# --- remote hosts --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    ["https://127.0.0.1/x", "sftp://127.0.0.1/x", "gsiftp://127.0.0.1/x", "ftp://127.0.0.1/x"],
)
def test_no_remote_transfer_without_an_allowlist(tmp_path, url):
    assert TransferSettings().hosts == []
    with pytest.raises(PermanentError, match=r"remote transfers are off .*transfers\.hosts"):
        transfer_for(url, ctx(tmp_path))
    with pytest.raises(PermanentError, match=r"host '127\.0\.0\.1' is not allowed"):
        transfer_for(url, ctx(tmp_path, hosts=["dtn.example.org"]))
    transfer_for(url, ctx(tmp_path, hosts=["DTN.example.org", "127.0.0.1"]))


def test_a_remote_host_not_on_the_list_fails_the_step_naming_the_field(env):
    echo_app(env.root, "alpha")
    job_id = submit_balsam(balsam_message(input_url="https://data.example.org/x"), start=False)
    site.stage_in.apply(args=(job_id,))
    assert subjob(job_id).state == "STAGED_IN_FAILED"
    assert "input_url: https://data.example.org/x: remote transfers are off" in (
        subjob(job_id).state_message
    )


def test_host_entries_and_a_remote_staging_area_are_checked_when_settings_load(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text('[sites.mira]\nworkdir = "/w"\n[sites.mira.transfers]\nhosts = ["h:22"]\n')
    with pytest.raises(ConfigurationError, match=r"hosts.*'h:22' is not a host name"):
        load_settings(path, {})
    path.write_text(
        '[argo]\nstaging_url = "sftp://stage.example.org/srv/argo"\n[sites.mira]\nworkdir = "/w"\n'
    )
    with pytest.raises(ConfigurationError, match=r"sites\.mira\.transfers\.hosts must list"):
        load_settings(path, {})
    path.write_text(
        '[argo]\nstaging_url = "sftp://stage.example.org/srv/argo"\n'
        '[sites.mira]\nworkdir = "/w"\n[sites.mira.transfers]\nhosts = ["Stage.example.org"]\n'
    )
    assert load_settings(path, {}).sites["mira"].transfers.hosts == ["stage.example.org"]


def test_a_remote_staging_area_is_fenced_but_a_jobs_own_part_is_not(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text(
        '[argo]\nstaging_url = "sftp://stage.example.org/srv/argo"\n'
        f'staging_dir = "{tmp_path / "argo"}"\n'
        '[sites.mira]\nworkdir = "/w"\n[sites.mira.transfers]\nhosts = ["stage.example.org"]\n'
    )
    from backends.transfers import scope as transfer_scope  # new in issue 12

    settings = load_settings(path, {})
    scope = transfer_scope.for_site(settings, "mira", 7)
    assert scope.problem("sftp://stage.example.org/srv/argo/7/sub0") is None
    assert "Argo staging area" in scope.problem("sftp://stage.example.org/srv/argo/8/sub0")
    assert "Argo staging area" in scope.problem("scp://STAGE.example.org/srv/argo/8")
    assert scope.problem("sftp://stage.example.org/srv/other") is None
