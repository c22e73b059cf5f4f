"""The sites page and the job page's "Waiting:" line in a real headless Chromium (issue 13,
Build 1 and 2); screenshots in tests/artifacts/."""

from __future__ import annotations

from datetime import timedelta

from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait
from sqlalchemy import update

from edgeceleryapp import job_views, site_monitor
from edgeceleryapp.db import session_scope
from edgeceleryapp.models import SiteMonitor, SubJob, utcnow
from edgeceleryapp.state_store import move_argo
from tests.test_web import Browser, browser  # noqa: F401 - the fixture
from tests.test_web_browser import chrome, column, login, shot  # noqa: F401 - the fixture


def test_sites_page_and_why_a_job_waits(browser: Browser, chrome) -> None:  # noqa: F811
    site_monitor.heartbeat("alpha")
    site_monitor.status_queried("alpha", utcnow(), 0.25, "squeue: timed out")
    waiting = browser.ids["fusion.d3d"][0]
    assert move_argo(waiting, "CREATED", ["STAGED_IN", "SUBJOB_SUBMITTED"], current_subjob=0)
    sub = job_views.show_argo(waiting)["subjobs"][0]["id"]
    site_monitor.step_error(sub, f"subjob {sub}: stage_in failed: input missing")
    with session_scope() as s:
        s.execute(
            update(SubJob)
            .where(SubJob.id == sub)
            .values(updated_at=utcnow() - timedelta(minutes=3), dispatched_at=None)
        )
        # beta's only worker went away ten minutes ago.
        s.execute(
            update(SiteMonitor)
            .where(SiteMonitor.site == "beta")
            .values(worker_seen_at=utcnow() - timedelta(minutes=10), worker_seen_by="login1:42")
        )

    wait = login(chrome, browser.base, "bob")
    chrome.find_element(By.ID, "nav-sites").click()
    wait.until(ec.presence_of_element_located((By.ID, "sites")))
    rows = chrome.find_elements(By.CSS_SELECTOR, "#sites tbody tr")
    assert [r.get_attribute("data-site") for r in rows] == ["alpha", "beta"]
    assert [r.get_attribute("class") for r in rows] == ["alive", "no-worker"]
    workers = column(chrome, "sites", "worker")
    assert workers[0].startswith("consuming") and workers[1].startswith("not seen lately")
    assert "by login1:42" in workers[1]
    assert column(chrome, "sites", "messages") == ["0", "0"]
    assert "squeue: timed out" in column(chrome, "sites", "status-query")[0]
    assert (
        f"subjob {sub}: stage_in failed: input missing" in column(chrome, "sites", "last-error")[1]
    )
    jobs = column(chrome, "sites", "jobs")
    assert jobs == ["CREATED: 7", "CREATED: 12"]
    assert column(chrome, "sites", "breaker") == ["closed", "closed"]
    shot(chrome, "sites")

    chrome.get(f"{browser.base}/jobs/{waiting}")
    WebDriverWait(chrome, 20).until(ec.presence_of_element_located((By.ID, "waiting")))
    assert chrome.find_element(By.ID, "waiting").text == (
        f"Waiting: subjob {sub}: no worker has taken queue site.beta for 3 min; "
        "its last worker was seen 10 min ago"
    )
    assert (
        "waiting: no worker has taken queue site.beta" in chrome.find_element(By.ID, "subjobs").text
    )
    shot(chrome, "job-waiting")
