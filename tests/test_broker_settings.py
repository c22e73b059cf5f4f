"""The [broker] settings: plaintext to another host, unverified TLS and stray TLS files are
refused at load, each naming the setting; every TLS URL gets verifying options (kombu's own
default for a bare rediss:// is no verification at all)."""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import sys
from pathlib import Path

import pytest

from edgeceleryapp import broker_connection
from edgeceleryapp.errors import ConfigurationError
from edgeceleryapp.settings import Settings, load_settings
from edgeceleryapp.throwaway_ca import BrokerTLS


def settings_with(tmp_path: Path, url: str, **broker: object) -> Settings:
    """Settings from a file with ``broker_url`` and a ``[broker]`` table."""
    lines = [f"broker_url = {json.dumps(url)}", "[broker]"]
    lines += [
        f"{k} = {json.dumps(v if isinstance(v, bool) else str(v))}" for k, v in broker.items()
    ]
    path = tmp_path / "edgecelery.toml"
    path.write_text("\n".join(lines) + "\n")
    return load_settings(path, {})


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> BrokerTLS:
    return BrokerTLS.make(tmp_path_factory.mktemp("tls"))


@pytest.mark.parametrize("url", ["redis://broker.example.org:6379/0", "amqp://u:p@10.0.0.5//"])
def test_plaintext_to_another_host_is_refused_unless_allowed(tmp_path: Path, url: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        settings_with(tmp_path, url)
    assert "broker_url" in str(caught.value) and "allow_plaintext" in str(caught.value)
    assert settings_with(tmp_path, url, allow_plaintext=True).broker_url == url


@pytest.mark.parametrize(
    "url", ["redis://127.0.0.1:6379/0", "redis://localhost/0", "amqp://[::1]:5672//"]
)
def test_plaintext_on_loopback_is_allowed(tmp_path: Path, url: str) -> None:
    assert broker_connection.ssl_options(settings_with(tmp_path, url)) is None


def test_unknown_scheme_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="broker_url: scheme 'sqs'"):
        settings_with(tmp_path, "sqs://queue")


def test_tls_files_with_a_plaintext_url_are_refused(tmp_path: Path, tls: BrokerTLS) -> None:
    with pytest.raises(ConfigurationError, match=r"broker.ca_file is set .* use rediss://"):
        settings_with(tmp_path, "redis://127.0.0.1/0", ca_file=tls.ca.ca_file)


def test_missing_tls_files_are_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match=r"broker\.ca_file: .* is not a readable file"):
        settings_with(tmp_path, "rediss://127.0.0.1/0", ca_file=tmp_path / "nope.pem")


def test_unverified_tls_is_refused_unless_allowed(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match=r"broker\.verify"):
        settings_with(tmp_path, "rediss://broker.example.org/0", verify=False)
    with pytest.raises(ConfigurationError, match=r"broker\.check_hostname"):
        settings_with(tmp_path, "amqps://broker.example.org//", check_hostname=False)
    loose = settings_with(tmp_path, "rediss://h/0", verify=False, allow_plaintext=True)
    assert broker_connection.ssl_options(loose)["ssl_cert_reqs"] == ssl.CERT_NONE


def test_certificate_login_needs_amqps_and_a_certificate(tmp_path: Path, tls: BrokerTLS) -> None:
    with pytest.raises(ConfigurationError, match=r'broker\.login = "certificate"'):
        settings_with(tmp_path, "amqps://127.0.0.1//", login="certificate")
    settings = settings_with(tmp_path, "amqps://127.0.0.1//", login="certificate", **tls.settings())
    assert broker_connection.connection_options(settings)["login_method"] == "EXTERNAL"


def test_rediss_options_verify_the_chain_and_the_host(tmp_path: Path, tls: BrokerTLS) -> None:
    settings = settings_with(tmp_path, "rediss://127.0.0.1:6380/0", **tls.settings())
    assert broker_connection.ssl_options(settings) == {
        "ssl_cert_reqs": ssl.CERT_REQUIRED,
        "ssl_check_hostname": True,
        "ssl_ca_certs": str(tls.ca.ca_file),
        "ssl_certfile": str(tls.client.cert_file),
        "ssl_keyfile": str(tls.client.key_file),
    }
    # A bare rediss:// (system CAs) still verifies.
    bare = broker_connection.ssl_options(settings_with(tmp_path, "rediss://redis.example.org/0"))
    assert bare == {"ssl_cert_reqs": ssl.CERT_REQUIRED, "ssl_check_hostname": True}


def test_amqps_options_check_the_host_named_in_the_url(tmp_path: Path, tls: BrokerTLS) -> None:
    settings = settings_with(tmp_path, "amqps://127.0.0.1:5671//", **tls.settings())
    options = broker_connection.ssl_options(settings)
    assert options["cert_reqs"] == ssl.CERT_REQUIRED
    assert options["server_hostname"] == "127.0.0.1"
    assert options["ca_certs"] == str(tls.ca.ca_file)
    assert options["certfile"] == str(tls.client.cert_file)


def test_the_service_app_connects_with_kombus_transport_and_tls(
    tmp_path: Path, tls: BrokerTLS
) -> None:
    """The defect: our transport passed to Celery as a class made kombu skip its TLS handling
    for rediss:// (plaintext without a word) and put a class in ``connection.info()``, which
    workers then failed to encode for ``inspect stats`` and Flower. The service's own app,
    loaded as a worker loads it, now names kombu's transport and carries verifying options."""
    settings_with(tmp_path, "rediss://127.0.0.1:6380/0", **tls.settings())
    probe = (
        "import json; from edgeceleryapp.celery_app import app; "
        "print(json.dumps(app.connection().info()))"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGECELERY_")}
    env["EDGECELERY_CONFIG"] = str(tmp_path / "edgecelery.toml")
    done = subprocess.run(
        [sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    info = json.loads(done.stdout)
    assert info["transport"] == "rediss"
    assert info["ssl"]["ssl_cert_reqs"] == ssl.CERT_REQUIRED
    assert info["ssl"]["ssl_ca_certs"] == str(tls.ca.ca_file)
