"""The job browser in a real headless Chromium (Debian's chromium and chromedriver, driven
by selenium): log in, list, filter by group, open a job, read its timeline, change its state
through the confirmation page. Screenshots go to tests/artifacts/ (ignored by git)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlencode

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import Select, WebDriverWait
from sqlalchemy import select

from edgeceleryapp.db import session_scope
from edgeceleryapp.devstack import free_port
from edgeceleryapp.models import SubJob
from edgeceleryapp.state_store import move_argo, move_subjob
from edgeceleryapp.states import GRAPH
from tests.helpers import SUBJOB_PATH
from tests.test_web import Browser, browser, state_of  # noqa: F401 - the fixture
from tests.webserver import PASSWORDS
from workflows.intake import submit_argo

ARTIFACTS = Path(__file__).parent / "artifacts"


def chromium_driver(profile: Path) -> webdriver.Chrome:
    """Headless Chromium as root, with nothing that reaches past loopback."""
    binary, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (binary and driver):
        pytest.fail("chromium and chromedriver are needed (scripts/setup.sh installs them)")
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1400,1000",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(driver), options=options)


@pytest.fixture
def chrome(tmp_path: Path) -> Iterator[webdriver.Chrome]:
    driver = chromium_driver(tmp_path / "chromium-profile")
    try:
        yield driver
    finally:
        driver.quit()


def shot(driver: webdriver.Chrome, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    assert driver.save_screenshot(str(ARTIFACTS / f"browser-{name}.png"))


def login(driver: webdriver.Chrome, base: str, user: str) -> WebDriverWait:
    wait = WebDriverWait(driver, 20)
    driver.get(base + "/jobs")
    wait.until(ec.presence_of_element_located((By.ID, "login")))
    driver.find_element(By.ID, "username").send_keys(user)
    driver.find_element(By.ID, "password").send_keys(PASSWORDS[user])
    shot(driver, "1-login")
    driver.find_element(By.ID, "login-button").click()
    wait.until(ec.presence_of_element_located((By.ID, "jobs")))
    return wait


def column(driver: webdriver.Chrome, table: str, cls: str) -> list[str]:
    return [td.text for td in driver.find_elements(By.CSS_SELECTOR, f"#{table} tbody td.{cls}")]


def test_log_in_filter_open_read_timeline_change_state(browser: Browser, chrome) -> None:  # noqa: F811
    wait = login(chrome, browser.base, "alice")
    assert "12 jobs; page 1 of 3" in chrome.find_element(By.ID, "count").text
    assert len(chrome.find_elements(By.CSS_SELECTOR, "#jobs tbody tr")) == 5
    shot(chrome, "2-jobs")

    group = chrome.find_element(By.ID, "group")
    group.send_keys("fusion")
    chrome.find_element(By.ID, "search").click()
    wait.until(ec.text_to_be_present_in_element((By.ID, "count"), "5 jobs"))
    assert set(column(chrome, "jobs", "group")) == {"fusion.d3d"}
    assert set(column(chrome, "jobs", "site")) == {"beta"}
    shot(chrome, "3-filtered")

    failed = browser.ids["fusion.d3d"][-1]
    chrome.find_element(By.LINK_TEXT, str(failed)).click()
    wait.until(ec.presence_of_element_located((By.ID, "timeline")))
    assert chrome.find_element(By.ID, "field-state").text == "STAGED_IN_FAILED"
    assert chrome.find_element(By.ID, "field-group_identifier").text == "fusion.d3d"
    timeline = column(chrome, "timeline", "to")
    assert timeline[0] == "CREATED" and timeline[-1] == "STAGED_IN_FAILED"
    assert column(chrome, "subjobs", "state") == ["CREATED"]
    shot(chrome, "4-job")

    Select(chrome.find_element(By.ID, "new-state")).select_by_value("HISTORY")
    chrome.find_element(By.ID, "change-state").click()
    wait.until(ec.presence_of_element_located((By.ID, "confirm")))
    assert "STAGED_IN_FAILED" in chrome.find_element(By.ID, "question").text
    assert state_of(failed) == "STAGED_IN_FAILED"  # nothing changes before the confirmation
    shot(chrome, "5-confirm")
    chrome.find_element(By.ID, "confirm").click()
    wait.until(ec.text_to_be_present_in_element((By.ID, "message"), "state set to HISTORY"))
    assert chrome.find_element(By.ID, "field-state").text == "HISTORY"
    assert column(chrome, "timeline", "to") == [*timeline, "HISTORY"]
    assert state_of(failed) == "HISTORY"
    shot(chrome, "6-changed")

    # Deleting needs the "Yes, I'm sure" box (Figure 6).
    chrome.find_element(By.ID, "delete").click()
    wait.until(ec.presence_of_element_located((By.ID, "error")))
    assert state_of(failed) == "HISTORY"
    chrome.find_element(By.ID, "sure").click()
    chrome.find_element(By.ID, "delete").click()
    wait.until(ec.text_to_be_present_in_element((By.ID, "message"), f"argo job {failed} deleted"))
    assert state_of(failed) is None
    shot(chrome, "7-deleted")


def test_a_reader_sees_no_change_controls(browser: Browser, chrome) -> None:  # noqa: F811
    login(chrome, browser.base, "bob")
    chrome.get(f"{browser.base}/jobs/{browser.ids['atlas.wjets'][0]}")
    WebDriverWait(chrome, 20).until(ec.presence_of_element_located((By.ID, "timeline")))
    assert not chrome.find_elements(By.ID, "state-form")
    assert "Only editors" in chrome.page_source


def test_log_out_everywhere_ends_the_other_sessions(browser: Browser, chrome) -> None:  # noqa: F811
    elsewhere = browser.client()
    assert elsewhere.login("alice").status == 302
    assert elsewhere.get("/api/jobs").status == 200
    wait = login(chrome, browser.base, "alice")
    chrome.find_element(By.ID, "logout-everywhere").click()
    wait.until(ec.presence_of_element_located((By.ID, "login")))
    shot(chrome, "8-logged-out-everywhere")
    assert elsewhere.get("/api/jobs").status == 401
    chrome.get(browser.base + "/jobs")
    wait.until(ec.presence_of_element_located((By.ID, "login")))


def test_login_never_leaves_the_site(browser: Browser, chrome) -> None:  # noqa: F811
    """Chromium reads ``/\\host`` as ``//host``, another site: here another loopback port,
    where nothing answers. The login lands on the job table instead."""
    elsewhere = f"127.0.0.1:{free_port()}"
    wait = WebDriverWait(chrome, 20)
    for target in (f"/\\{elsewhere}/", f"//{elsewhere}/", f"/%5C{elsewhere}/"):
        chrome.delete_all_cookies()
        chrome.get(f"{browser.base}/login?{urlencode({'next': target})}")
        wait.until(ec.presence_of_element_located((By.ID, "login")))
        chrome.find_element(By.ID, "username").send_keys("bob")
        chrome.find_element(By.ID, "password").send_keys(PASSWORDS["bob"])
        chrome.find_element(By.ID, "login-button").click()
        wait.until(ec.presence_of_element_located((By.ID, "jobs")))
        assert chrome.current_url == browser.base + "/jobs", target


def test_a_graph_job_page_draws_the_graph(browser: Browser, chrome) -> None:  # noqa: F811
    """A diamond with one branch finished and one failed, its join blocked: drawn in layers,
    parents above children, each box coloured by its state. A linear job's page has no
    drawing."""
    message = {
        "name": "diamond",
        "subjobs": [
            {"name": "gen", "site": "alpha", "application": "echo", "parents": []},
            {"name": "left", "site": "alpha", "application": "echo", "parents": ["gen"]},
            {"name": "right", "site": "beta", "application": "echo", "parents": ["gen"]},
            {"name": "join", "site": "beta", "application": "echo", "parents": ["left", "right"]},
        ],
    }
    argo_id = submit_argo(message, start=False)
    assert move_argo(argo_id, "CREATED", ["STAGED_IN", "SUBJOBS_RUNNING"], machine=GRAPH)
    with session_scope() as s:
        rows = s.execute(select(SubJob.name, SubJob.id).where(SubJob.argo_job_id == argo_id))
        ids = {name: ident for name, ident in rows}
    assert move_subjob(ids["gen"], "CREATED", SUBJOB_PATH[1:])
    assert move_subjob(ids["left"], "CREATED", SUBJOB_PATH[1:6])
    assert move_subjob(ids["right"], "CREATED", ["STAGED_IN", "PREPROCESSED_FAILED"], "exit 1")

    wait = login(chrome, browser.base, "alice")
    chrome.get(f"{browser.base}/jobs/{argo_id}")
    wait.until(ec.presence_of_element_located((By.ID, "graph-drawing")))
    nodes = {
        g.get_attribute("data-name"): g
        for g in chrome.find_elements(By.CSS_SELECTOR, "#graph-drawing g.node")
    }
    assert {name: g.get_attribute("class") for name, g in nodes.items()} == {
        "gen": "node done",
        "left": "node running",
        "right": "node failed",
        "join": "node blocked",
    }
    top = {name: g.rect["y"] for name, g in nodes.items()}
    assert top["gen"] < top["left"] == top["right"] < top["join"]
    fills = {
        name: g.find_element(By.TAG_NAME, "rect").value_of_css_property("fill")
        for name, g in nodes.items()
    }
    assert len(set(fills.values())) == 4, fills  # the stylesheet colours each state
    assert len(chrome.find_elements(By.CSS_SELECTOR, "#graph-drawing line.edge")) == 4
    chrome.execute_script("window.scrollTo(0, document.getElementById('graph').offsetTop - 90)")
    shot(chrome, "graph")

    chrome.get(f"{browser.base}/jobs/{browser.ids['atlas.wjets'][0]}")
    wait.until(ec.presence_of_element_located((By.ID, "timeline")))
    assert not chrome.find_elements(By.ID, "graph")
