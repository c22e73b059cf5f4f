"""Finding and handling failures in the job browser, in a real headless Chromium: the "any
failure" filter, failed rows highlighted, the job page headed by the job's name and id with
local times and the poller's marks, the tail of each batch output stream, retrying a failed
job through a confirmation page, and the page reloading itself while its job moves.
Screenshots go to tests/artifacts/."""

from __future__ import annotations

import re

from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import Select, WebDriverWait

from edgeceleryapp.db import read_scope
from edgeceleryapp.models import JobEvent, SubJob
from edgeceleryapp.state_store import move_argo, move_subjob
from tests.test_web import Browser, browser, state_of  # noqa: F401 - the fixture
from tests.test_web_browser import chrome, login, shot  # noqa: F401 - the fixture
from workflows.intake import submit_argo

LOCAL_TIME = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d [A-Z][A-Za-z0-9+-]*$")


def test_any_failure_filter_highlights_and_retry_with_confirmation(browser: Browser, chrome):  # noqa: F811
    wait = login(chrome, browser.base, "alice")
    Select(chrome.find_element(By.ID, "state")).select_by_visible_text("any failure")
    chrome.find_element(By.ID, "search").click()
    wait.until(ec.text_to_be_present_in_element((By.ID, "count"), "2 jobs"))
    rows = chrome.find_elements(By.CSS_SELECTOR, "#jobs tbody tr")
    failed = {browser.ids["atlas.wjets"][-1], browser.ids["fusion.d3d"][-1]}
    assert {int(r.get_attribute("data-id")) for r in rows} == failed
    assert all("failed" in r.get_attribute("class") for r in rows)
    cell = rows[0].find_element(By.CSS_SELECTOR, "td.state")
    assert cell.value_of_css_property("color") == "rgba(170, 0, 0, 1)"
    assert LOCAL_TIME.match(rows[0].find_elements(By.TAG_NAME, "td")[1].text)
    shot(chrome, "failures-1-filter")

    job = browser.ids["fusion.d3d"][-1]
    chrome.find_element(By.LINK_TEXT, str(job)).click()
    wait.until(ec.presence_of_element_located((By.ID, "retry")))
    assert chrome.find_element(By.ID, "heading").text == f"gen4 (argo job {job})"
    assert "Job display for database entry" not in chrome.page_source
    times = [td.text for td in chrome.find_elements(By.CSS_SELECTOR, "#timeline td.time")]
    assert times and all(LOCAL_TIME.match(t) for t in times)
    assert LOCAL_TIME.match(chrome.find_element(By.ID, "field-updated_at").text)
    shot(chrome, "failures-2-job")

    chrome.find_element(By.ID, "retry").click()
    wait.until(ec.presence_of_element_located((By.ID, "confirm")))
    assert "STAGED_IN_FAILED" in chrome.find_element(By.ID, "question").text
    assert state_of(job) == "STAGED_IN_FAILED"  # nothing happens before the confirmation
    shot(chrome, "failures-3-confirm")
    chrome.find_element(By.ID, "confirm").click()
    wait.until(ec.text_to_be_present_in_element((By.ID, "message"), "back at CREATED"))
    assert state_of(job) == "CREATED"
    with read_scope() as s:
        last = s.query(JobEvent).filter_by(argo_job_id=job).order_by(JobEvent.id.desc()).first()
        assert last.to_state == "CREATED"
        assert last.message == "retry requested by alice (browser) (from STAGED_IN_FAILED)"
    shot(chrome, "failures-4-retried")

    # The job moves again: the page, left alone, shows it without a click.
    assert chrome.find_element(By.ID, "refreshing")
    assert move_argo(job, "CREATED", "STAGED_IN_FAILED", "input still missing")
    WebDriverWait(chrome, 30).until(
        ec.text_to_be_present_in_element((By.ID, "field-state"), "STAGED_IN_FAILED")
    )
    assert not chrome.find_elements(By.ID, "refreshing"), "a stopped job is not watched"
    shot(chrome, "failures-5-refreshed")


def test_a_reader_gets_no_retry_button(browser: Browser, chrome):  # noqa: F811
    login(chrome, browser.base, "bob")
    chrome.get(f"{browser.base}/jobs/{browser.ids['fusion.d3d'][-1]}")
    WebDriverWait(chrome, 20).until(ec.presence_of_element_located((By.ID, "timeline")))
    assert not chrome.find_elements(By.ID, "retry")
    anyone = browser.client()
    assert anyone.login("bob").status == 302
    answer = anyone.request(
        "POST",
        f"/jobs/{browser.ids['fusion.d3d'][-1]}/retry",
        {"confirm": "yes", "_xsrf": anyone.xsrf()},
    )
    assert answer.status == 403
    assert state_of(browser.ids["fusion.d3d"][-1]) == "STAGED_IN_FAILED"


def test_the_job_page_shows_the_end_of_both_output_streams(browser: Browser, chrome):  # noqa: F811
    argo_id = submit_argo(
        {"name": "noisy", "subjobs": [{"name": "s", "site": "alpha", "application": "echo"}]},
        start=False,
    )
    with read_scope() as s:
        subjob_id = s.query(SubJob.id).filter(SubJob.argo_job_id == argo_id).scalar()
    assert move_subjob(subjob_id, "CREATED", ["STAGED_IN_FAILED"], "broken")
    control = browser.root / "sites" / "alpha" / "jobs" / str(subjob_id) / ".edgecelery"
    control.mkdir(parents=True)
    (control / "batch.1.out").write_text("".join(f"line {i}\n" for i in range(5000)))
    (control / "batch.1.err").write_text("Traceback: it broke\n")
    login(chrome, browser.base, "alice")
    chrome.get(f"{browser.base}/jobs/{argo_id}")
    wait = WebDriverWait(chrome, 20)
    wait.until(ec.presence_of_element_located((By.ID, f"log-{subjob_id}-err")))
    assert chrome.find_element(By.ID, f"log-{subjob_id}-err").text == "Traceback: it broke"
    out = chrome.find_element(By.ID, f"log-{subjob_id}-out").text
    assert out.endswith("line 4999") and "line 0\n" not in out, "the end, not all of it"
    assert str(control.parent) in chrome.find_element(By.CSS_SELECTOR, "#subjobs td.workdir").text
    assert f"edgecelery job logs {subjob_id} --attempt 1 --stderr" in chrome.page_source
    shot(chrome, "failures-6-logs")
