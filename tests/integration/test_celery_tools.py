"""Celery's own tools against the running service: ``celery -A edgeceleryapp inspect``
(``ping``, ``stats``, ``active``) answers for every worker, no worker logs an EncodeError for
it, and Flower's worker page shows the worker's stats and its Broker page the queue of each
site, rendered in headless Chromium (screenshots in tests/artifacts/); on Redis and on
RabbitMQ (TLS, certificate logins; the Broker page through the management API).

They broke when Celery was handed our Redis transport as a class: ``connection.info()`` then
held a Python class, which a worker cannot encode into its ``stats`` reply and which Flower
does not know as a broker."""

from __future__ import annotations

import base64
import json
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

from edgeceleryapp.devstack import free_port, wait_for
from tests.integration.conftest import Deployment, running_deployment
from tests.test_web_browser import ARTIFACTS, chromium_driver

pytestmark = pytest.mark.integration
SITES = ("alpha", "beta")


FLOWER_AUTH = "ops:flower-secret"
AUTH_HEADER = {"Authorization": "Basic " + base64.b64encode(FLOWER_AUTH.encode()).decode()}


@pytest.fixture(scope="module", params=["redis", "rabbitmq"])
def tools_deployment(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Deployment]:
    node = request.getfixturevalue("rabbitmq_node") if request.param == "rabbitmq" else None
    root = tmp_path_factory.mktemp(f"tools-{request.param}")
    flower = {
        "EDGECELERY_FLOWER__BASIC_AUTH": json.dumps([FLOWER_AUTH]),
        "EDGECELERY_FLOWER__DB": str(root / "flower.db"),
    }
    with running_deployment(root, SITES, env_extra=flower, rabbitmq=node) as dep:
        yield dep


def inspect(dep: Deployment, command: str) -> dict:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "edgeceleryapp",
            "inspect",
            command,
            "--json",
            "--timeout",
            "5",
        ],
        env=dep.env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def worker_names() -> set[str]:
    host = socket.gethostname()
    return {f"{name}@{host}" for name in ("argo", *SITES)}


def test_inspect_ping_stats_active_answer_and_no_worker_logs_an_encode_error(
    tools_deployment: Deployment,
) -> None:
    dep = tools_deployment
    assert set(inspect(dep, "ping")) == worker_names()
    stats = inspect(dep, "stats")
    assert set(stats) == worker_names()
    for reply in stats.values():
        # A scheme name, as kombu registers its transports: not a class.
        assert reply["broker"]["transport"] == dep.broker_url.split("://")[0]
        assert reply["pool"]["max-concurrency"] >= 1
    active = inspect(dep, "active")
    assert set(active) == worker_names()
    for log in (dep.root / "logs").glob("*.log"):
        assert "EncodeError" not in log.read_text(), log.name


def _flower(dep: Deployment, log: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "edgeceleryapp.cli", "flower", "--port", str(port)],
        env=dep.env,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"

    def listed() -> bool:
        if proc.poll() is not None:
            raise AssertionError(log.read_text())
        request = urllib.request.Request(base + "/api/workers?refresh=1", headers=AUTH_HEADER)
        try:
            with urllib.request.urlopen(request, timeout=10) as reply:
                return worker_names() <= set(json.loads(reply.read()))
        except OSError:
            return False

    wait_for(listed, 60, "Flower to list the workers", interval=0.5)
    return proc, base


def body(driver: WebDriver) -> str:
    """The page's text, the tabs not shown included, one space between words."""
    return " ".join(driver.execute_script("return document.body.textContent").split())


def test_flower_worker_and_broker_pages_in_chromium(
    tools_deployment: Deployment, tmp_path: Path
) -> None:
    dep = tools_deployment
    broker = "redis" if dep.broker_url.startswith("redis") else "rabbitmq"
    proc, base = _flower(dep, tmp_path / "flower.log")
    driver = chromium_driver(tmp_path / "chromium-profile")
    # Flower's basic authentication, on every request the pages make.
    driver.execute_cdp_cmd("Network.enable", {})
    driver.execute_cdp_cmd("Network.setExtraHTTPHeaders", {"headers": AUTH_HEADER})
    ARTIFACTS.mkdir(exist_ok=True)
    try:
        driver.get(f"{base}/worker/alpha@{socket.gethostname()}")
        WebDriverWait(driver, 30).until(lambda d: "Max concurrency" in body(d))
        page = body(driver)
        assert "Unable to get stats" not in page
        assert f"Transport {dep.broker_url.split('://')[0]}" in page
        assert driver.save_screenshot(str(ARTIFACTS / f"flower-{broker}-worker.png"))
        driver.get(f"{base}/broker")
        WebDriverWait(driver, 30).until(lambda d: "site.beta" in body(d))
        page = body(driver)
        assert "not supported" not in page
        for queue in ("argo", "site.alpha", "site.beta"):
            assert queue in page
        assert driver.save_screenshot(str(ARTIFACTS / f"flower-{broker}-broker.png"))
    finally:
        driver.quit()
        proc.terminate()
        proc.wait(20)
    assert "EncodeError" not in (tmp_path / "flower.log").read_text()
