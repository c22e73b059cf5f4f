"""The Python API and the settings loader."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from backends.schedulers import scheduler_for
from backends.schedulers.pbs import TorqueScheduler
from backends.transfers import TransferContext, transfer_for
from edgeceleryapp import api
from edgeceleryapp.errors import ConfigurationError, ValidationFailed
from edgeceleryapp.models import ArgoJob
from edgeceleryapp.settings import load_settings
from tests.helpers import argo, count


def test_submit_argo_job_returns_the_id_of_a_stored_job(env):
    argo_id = api.submit_argo_job(
        {"name": "x", "subjobs": [{"name": "a", "site": "alpha", "application": "echo"}]}
    )
    assert isinstance(argo_id, int)
    assert argo(argo_id).state == "CREATED"
    assert api.argo_job(argo_id)["subjobs"][0]["site"] == "alpha"


def test_submit_argo_job_refuses_bad_messages_and_stores_nothing(env):
    with pytest.raises(ValidationFailed) as caught:
        api.submit_argo_job('{"name": "x", "subjobs": []}')
    assert caught.value.errors[0][0] == "subjobs"
    assert count(ArgoJob) == 0


def test_settings_file_then_environment_overrides(tmp_path: Path):
    path = tmp_path / "s.toml"
    path.write_text(
        'broker_url = "redis://127.0.0.1/0"\n[sites.mira]\nworkdir = "/w"\nqueue = "q"\n'
    )
    settings = load_settings(
        path,
        {
            "EDGECELERY_BROKER_URL": "amqp://127.0.0.1//",
            "EDGECELERY_SITES__MIRA__POLL_INTERVAL": "7.5",
            "EDGECELERY_SITES__MIRA__LAUNCHER": '["mpirun", "-n", "{total_procs}"]',
        },
    )
    assert settings.broker_url == "amqp://127.0.0.1//"
    assert settings.sites["mira"].poll_interval == 7.5
    assert settings.sites["mira"].queue == "q"
    assert settings.sites["mira"].launcher == ["mpirun", "-n", "{total_procs}"]


def test_settings_errors_name_the_key(tmp_path: Path):
    path = tmp_path / "s.toml"
    path.write_text('[sites.mira]\nworkdir = "relative/dir"\npoll_intervall = 3\n')
    with pytest.raises(ConfigurationError) as caught:
        load_settings(path, {})
    message = str(caught.value)
    assert "sites.mira.workdir: Value error, must be an absolute path" in message
    assert "sites.mira.poll_intervall" in message


def test_a_misspelt_scheduler_fails_at_load_naming_the_known_ones(tmp_path: Path):
    path = tmp_path / "s.toml"
    path.write_text('[sites.mira]\nworkdir = "/tmp"\nscheduler = "slrum"\n')
    with pytest.raises(ConfigurationError) as caught:
        load_settings(path, {})
    assert "sites.mira.scheduler: Value error, unknown scheduler 'slrum'" in str(caught.value)
    assert "(known: cobalt, condor, local, lsf, pbs, sge, slurm, torque," in str(caught.value)


def test_unknown_runners_and_transfer_schemes_fail_at_load(tmp_path: Path):
    path = tmp_path / "s.toml"
    for table, message in (
        ('runner = "sssh"', "sites.mira.runner: Value error, unknown runner 'sssh' (known: local,"),
        ('transfers.schemes = ["s3"]', "schemes: unknown transfer scheme 's3' (known: file, ftp,"),
        ('transfers.plugins = {s3 = "not a path"}', "sites.mira.transfers.plugins"),
    ):
        path.write_text(f'[sites.mira]\nworkdir = "/tmp"\n{table}\n')
        with pytest.raises(ConfigurationError) as caught:
            load_settings(path, {})
        assert message in str(caught.value)


def test_a_site_names_its_own_plugins_by_dotted_path(tmp_path: Path):
    path = tmp_path / "s.toml"
    path.write_text(
        '[sites.mira]\nworkdir = "/tmp"\nscheduler = "backends.schedulers.pbs.TorqueScheduler"\n'
        '[sites.mira.transfers]\nschemes = ["s3"]\nhosts = ["bucket"]\n'
        'plugins = {s3 = "mysite.transfers:S3"}\n'
    )
    site = load_settings(path, {}).sites["mira"]
    assert isinstance(scheduler_for(site), TorqueScheduler)
    wrong = site.model_copy(update={"scheduler": "edgeceleryapp.errors:PermanentError"})
    with pytest.raises(ConfigurationError, match="is not a Scheduler class"):
        scheduler_for(wrong)
    with pytest.raises(ConfigurationError, match=r"cannot load 'mysite\.transfers:S3'"):
        transfer_for("s3://bucket/key", TransferContext([tmp_path], site.transfers))


def test_plugins_are_imported_only_when_a_site_names_them():
    code = (
        "import sys, backends.schedulers, backends.transfers, edgeceleryapp.settings\n"
        "assert not {'paramiko', 'backends.schedulers.slurm'} & set(sys.modules), sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_missing_settings_file_is_named(tmp_path: Path):
    with pytest.raises(ConfigurationError, match=r"nope\.toml does not exist"):
        load_settings(None, {"EDGECELERY_CONFIG": str(tmp_path / "nope.toml")})


def test_unknown_site_is_a_configuration_error(env):
    from edgeceleryapp.settings import get_settings

    with pytest.raises(ConfigurationError, match=r"sites\.nowhere"):
        get_settings().site("nowhere")
