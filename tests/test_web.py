"""The job browser over HTTP: a real ``edgecelery web`` process, a client keeping cookies.

Without a login nothing is served; without the XSRF token nothing changes; only editors
change; the JSON API filters, sorts and paginates; changes are recorded as JobEvents.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import select, text

from edgeceleryapp.db import engine, init_db, reset_engine, session_scope
from edgeceleryapp.job_views import JobQuery, _filtered
from edgeceleryapp.models import ArgoJob, JobEvent
from edgeceleryapp.settings import reset_settings
from edgeceleryapp.state_store import move_argo
from tests.webserver import Client, running_web, web_config
from workflows.intake import submit_argo


@dataclass
class Browser:
    base: str
    ids: dict[str, list[int]]  # group -> argo job ids, oldest first
    root: Path

    def client(self) -> Client:
        return Client(self.base)


def argo_message(group: str, sites: list[str], n: int) -> dict:
    return {
        "name": f"gen{n}",
        "user_id": f"{group}.job{n:03d}",
        "group_identifier": group,
        "email": "someone@example.org",
        "output_url": f"local:///out/{group}/{n}",
        "subjobs": [
            {"name": f"step{i}", "site": site, "application": "echo"}
            for i, site in enumerate(sites)
        ],
    }


def seed_jobs() -> dict[str, list[int]]:
    """Seven jobs at alpha then beta in group atlas.wjets, five at beta only in fusion.d3d;
    the last of each failed its stage-in, so it can be changed by hand."""
    ids: dict[str, list[int]] = {"atlas.wjets": [], "fusion.d3d": []}
    for n in range(7):
        ids["atlas.wjets"].append(
            submit_argo(argo_message("atlas.wjets", ["alpha", "beta"], n), start=False)
        )
    for n in range(5):
        ids["fusion.d3d"].append(submit_argo(argo_message("fusion.d3d", ["beta"], n), start=False))
    for group in ids.values():
        assert move_argo(group[-1], "CREATED", "STAGED_IN_FAILED", "input missing")
    return ids


@pytest.fixture
def browser(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Browser]:
    config = web_config(tmp_path)
    monkeypatch.setenv("EDGECELERY_CONFIG", str(config))
    reset_settings()
    reset_engine()
    init_db()
    ids = seed_jobs()
    with running_web(config, tmp_path / "web.log") as base:
        yield Browser(base, ids, tmp_path)
    reset_engine()
    reset_settings()


def state_of(argo_id: int) -> str | None:
    with session_scope() as s:
        job = s.get(ArgoJob, argo_id)
        return job.state if job else None


def test_nothing_is_served_without_a_login(browser: Browser) -> None:
    anon = browser.client()
    page = anon.get("/jobs")
    assert page.status == 302 and page.headers["Location"].startswith("/login?next=")
    assert anon.get(f"/jobs/{browser.ids['atlas.wjets'][0]}").status == 302
    api = anon.get("/api/jobs")
    assert api.status == 401 and json.loads(api.body) == {"error": "log in first"}
    # A change with a valid XSRF token but no login is refused too, and changes nothing.
    token = anon.xsrf()
    failed = browser.ids["fusion.d3d"][-1]
    answer = anon.request(
        "POST", f"/api/jobs/{failed}/state", b'{"state": "HISTORY"}', {"X-XSRFToken": token}
    )
    assert answer.status == 401
    assert state_of(failed) == "STAGED_IN_FAILED"


def test_wrong_password_is_refused(browser: Browser) -> None:
    client = browser.client()
    token = client.xsrf()
    answer = client.request(
        "POST", "/login", {"username": "alice", "password": "guess", "_xsrf": token}
    )
    assert answer.status == 401 and "Wrong user name or password" in answer.body
    answer = client.request(
        "POST", "/login", {"username": "mallory", "password": "guess", "_xsrf": token}
    )
    assert answer.status == 401
    assert client.get("/api/jobs").status == 401


def test_changes_without_the_xsrf_token_are_refused(browser: Browser) -> None:
    alice = browser.client()
    assert alice.login("alice").status == 302
    failed = browser.ids["fusion.d3d"][-1]
    form = alice.request("POST", f"/jobs/{failed}/state", {"state": "HISTORY", "confirm": "yes"})
    assert form.status == 403 and "_xsrf" in form.body
    api = alice.request("POST", f"/api/jobs/{failed}/state", b'{"state": "HISTORY"}')
    assert api.status == 403
    wrong = alice.request(
        "DELETE", f"/api/jobs/{failed}", headers={"X-XSRFToken": "2|00000000|" + "0" * 32 + "|1"}
    )
    assert wrong.status == 403
    delete = alice.request("POST", f"/jobs/{failed}/delete", {"sure": "yes"})
    assert delete.status == 403
    assert state_of(failed) == "STAGED_IN_FAILED"


def test_only_editors_change_jobs(browser: Browser) -> None:
    bob = browser.client()
    assert bob.login("bob").status == 302
    failed = browser.ids["fusion.d3d"][-1]
    assert bob.get(f"/api/jobs/{failed}").status == 200
    answer = bob.request(
        "POST",
        f"/api/jobs/{failed}/state",
        b'{"state": "HISTORY"}',
        {"X-XSRFToken": bob.cookie("_xsrf") or ""},
    )
    assert answer.status == 403
    assert state_of(failed) == "STAGED_IN_FAILED"


def test_api_filters_sorts_and_pages(browser: Browser) -> None:
    alice = browser.client()
    alice.login("alice")

    def jobs(query: str) -> dict:
        answer = alice.get("/api/jobs?" + query)
        assert answer.status == 200, answer.body
        return json.loads(answer.body)

    atlas = browser.ids["atlas.wjets"]
    first = jobs("group=atlas")
    assert (first["total"], first["pages"], first["page_size"]) == (7, 2, 5)
    assert [j["id"] for j in first["jobs"]] == atlas[::-1][:5]
    assert [j["id"] for j in jobs("group=atlas&page=2")["jobs"]] == atlas[::-1][5:]
    ascending = jobs("group=atlas.wjets&sort=id&order=asc")
    assert [j["id"] for j in ascending["jobs"]] == atlas[:5]
    row = ascending["jobs"][0]
    assert row["site"] == "alpha" and row["user_id"] == "atlas.wjets.job000"
    assert row["output_url"] == "local:///out/atlas.wjets/0"
    failed = jobs("state=staged_in_failed")
    assert sorted(j["id"] for j in failed["jobs"]) == sorted(g[-1] for g in browser.ids.values())
    # Jobs with a subjob at alpha: only the atlas ones.
    assert jobs("site=alpha")["total"] == 7
    assert jobs("site=beta")["total"] == 12
    assert jobs("group=fusion&site=alpha")["total"] == 0
    assert alice.get("/api/jobs?state=NOPE").status == 400


def test_api_state_change_and_delete_are_recorded(browser: Browser) -> None:
    alice = browser.client()
    alice.login("alice")
    token = {"X-XSRFToken": alice.cookie("_xsrf") or ""}
    failed = browser.ids["fusion.d3d"][-1]
    answer = alice.request("POST", f"/api/jobs/{failed}/state", b'{"state": "HISTORY"}', token)
    assert answer.status == 200, answer.body
    assert json.loads(answer.body) == {"id": failed, "state": "HISTORY"}
    with session_scope() as s:
        last = s.scalars(
            select(JobEvent).where(JobEvent.argo_job_id == failed).order_by(JobEvent.id.desc())
        ).first()
        assert (last.from_state, last.to_state) == ("STAGED_IN_FAILED", "HISTORY")
        assert "alice" in last.message and last.published
    # A job whose chain may be running is not set by hand.
    created = browser.ids["fusion.d3d"][0]
    busy = alice.request("POST", f"/api/jobs/{created}/state", b'{"state": "HISTORY"}', token)
    assert busy.status == 409 and "cancel it first" in json.loads(busy.body)["error"]
    assert alice.request("DELETE", f"/api/jobs/{failed}", headers=token).status == 200
    assert state_of(failed) is None
    assert alice.get(f"/api/jobs/{failed}").status == 404


def test_filtered_pages_are_read_from_an_index(browser: Browser) -> None:
    """The table's queries use the indexes (here SQLite's plan; bench/browser_scale.py times
    them at 100,000 jobs). A group prefix is a range, whose matches are then sorted; the
    others come out of their index already in order."""
    for query, sorted_in_index in (
        (JobQuery(state="HISTORY"), True),
        (JobQuery(sort="updated"), True),
        (JobQuery(site="alpha"), True),
        (JobQuery(group="atlas"), False),
    ):
        statement = _filtered(query, select(ArgoJob.id)).order_by(
            {"updated": ArgoJob.updated_at}.get(query.sort, ArgoJob.id).desc()
        )
        sql = str(statement.compile(engine(), compile_kwargs={"literal_binds": True}))
        with engine().connect() as conn:
            plan = " ".join(row[-1] for row in conn.execute(text("EXPLAIN QUERY PLAN " + sql)))
        assert "USING" in plan and "INDEX" in plan, (query, plan)
        assert sorted_in_index == ("TEMP B-TREE" not in plan), (query, plan)
