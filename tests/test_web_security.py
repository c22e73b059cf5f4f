"""The job browser against a web attacker: redirects after login stay on the site, password
guessing is limited and never starves the pages, sessions end when they should (logout, "log
out everywhere", a password change), and reading the job table never takes the database's
write lock. Each test runs a real ``edgecelery web`` process (tests/webserver.py)."""

from __future__ import annotations

import copy
import http.client
import sqlite3
import threading
import time
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlencode, urlsplit

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select

from edgeceleryapp.cli import main
from edgeceleryapp.db import init_db, reset_engine, session_scope
from edgeceleryapp.errors import ConfigurationError
from edgeceleryapp.models import WebSession
from edgeceleryapp.settings import reset_settings
from edgeceleryapp.web import sessions
from edgeceleryapp.web.accounts import with_password
from edgeceleryapp.web.auth import hash_password
from edgeceleryapp.web.login_throttle import LoginThrottle, address_key
from edgeceleryapp.web.redirects import local_target
from tests.test_web import Browser, seed_jobs
from tests.webserver import PASSWORDS, Client, Response, running_web, web_config

# Targets that would send a user elsewhere after logging in, as the handler receives them
# (already decoded once from the query or the form).
HOSTILE_TARGETS = [
    "/\\evil.example",
    "\\\\evil.example",
    "//evil.example",
    "///evil.example",
    "https://evil.example/",
    "http:/evil.example",
    "javascript:alert(1)",
    "evil.example",
    "/%5Cevil.example",
    "/%5cevil.example",
    "/%2F/evil.example",
    "/\t/evil.example",
    "/\n/evil.example",
    " //evil.example",
]
LOCAL_TARGETS = ["/jobs/3", "/jobs?group=atlas&page=2", "/api/jobs", "/"]


@contextmanager
def serving(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **web: int | float
) -> Iterator[Browser]:
    """``edgecelery web`` with the test users, seeded jobs and ``web`` added to [web]."""
    config = web_config(tmp_path, **web)
    monkeypatch.setenv("EDGECELERY_CONFIG", str(config))
    reset_settings()
    reset_engine()
    init_db()
    try:
        ids = seed_jobs()
        with running_web(config, tmp_path / "web.log") as base:
            yield Browser(base, ids, tmp_path)
    finally:
        reset_engine()
        reset_settings()


@pytest.fixture
def browser(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Browser]:
    """Three failures lock a name, six an address, for a 300 s window."""
    with serving(
        tmp_path, monkeypatch, login_attempts=3, login_attempts_per_address=6, login_window=300
    ) as b:
        yield b


def attempt(client: Client, user: str, password: str, next_url: str = "") -> Response:
    form = {"username": user, "password": password, "_xsrf": client.xsrf()}
    if next_url:
        form["next"] = next_url
    return client.request("POST", "/login", form)


def logged_in(browser: Browser, user: str) -> Client:
    client = browser.client()
    assert client.login(user).status == 302
    return client


def can_read(client: Client) -> bool:
    status = client.get("/api/jobs").status
    assert status in (200, 401), status
    return status == 200


# --- redirects after login -------------------------------------------------------------------


@pytest.mark.parametrize("target", HOSTILE_TARGETS)
def test_a_redirect_target_off_the_site_is_refused(target: str) -> None:
    assert local_target(target) == "/jobs"


@pytest.mark.parametrize("target", LOCAL_TARGETS)
def test_a_path_on_the_site_is_a_redirect_target(target: str) -> None:
    assert local_target(target) == target


def test_login_redirects_only_to_paths_on_the_site(browser: Browser) -> None:
    for target in HOSTILE_TARGETS:
        client = browser.client()
        answer = attempt(client, "alice", PASSWORDS["alice"], target)
        assert (answer.status, answer.headers["Location"]) == (302, "/jobs"), target
    for target in LOCAL_TARGETS:
        answer = attempt(browser.client(), "alice", PASSWORDS["alice"], target)
        assert (answer.status, answer.headers["Location"]) == (302, target), target
    # The same through the login page's own link, as a browser sends it (raw query strings).
    for query in ("next=/\\evil.example", "next=/%5Cevil.example", "next=%2F%2Fevil.example"):
        page = browser.client().get("/login?" + query)
        assert page.status == 200
        assert 'name="next" value="/jobs"' in page.body, (query, page.body)
        assert "evil.example" not in page.body


# --- login limits ----------------------------------------------------------------------------


def test_failed_logins_lock_the_name_with_429_and_retry_after(browser: Browser) -> None:
    client = browser.client()
    for _ in range(3):
        assert attempt(client, "alice", "guess").status == 401
    refused = attempt(client, "alice", PASSWORDS["alice"])
    assert refused.status == 429 and "Too many failed logins" in refused.body
    # One token comes back every 300 s / 3 attempts.
    assert 1 <= int(refused.headers["Retry-After"]) <= 100
    assert not can_read(client)
    # The lock is on alice's name: bob, from the same address, logs in.
    assert attempt(browser.client(), "bob", PASSWORDS["bob"]).status == 302


def test_a_right_password_forgives_earlier_failures(browser: Browser) -> None:
    client = browser.client()
    for _ in range(2):
        assert attempt(client, "alice", "guess").status == 401
    assert attempt(client, "alice", PASSWORDS["alice"]).status == 302
    for _ in range(2):
        assert attempt(browser.client(), "alice", "guess").status == 401


def timed(fn, *args):  # type: ignore[no-untyped-def]
    start = time.monotonic()
    result = fn(*args)
    return result, time.monotonic() - start


def test_failed_logins_lock_the_address_and_refusals_run_no_hash(browser: Browser) -> None:
    """Six wrong guesses at six names (each checked against the decoy hash, a full PBKDF2)
    lock the address: then even bob's right password is refused, in a fraction of the time
    one password check takes, since no hash runs."""
    client = browser.client()
    checked = []
    for n in range(6):
        answer, seconds = timed(attempt, client, f"nobody{n}", "guess")
        assert answer.status == 401
        checked.append(seconds)
    refusals = []
    for user, password in (("bob", PASSWORDS["bob"]), ("nobody9", "guess")):
        answer, seconds = timed(attempt, client, user, password)
        assert answer.status == 429, answer.body
        refusals.append(seconds)
    # attempt() also fetches the login page for its XSRF token, in both cases.
    assert max(refusals) < min(checked) / 2, (refusals, checked)


def test_password_checks_never_delay_the_pages(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Sixteen logins at once (unknown names: each a full PBKDF2 of the decoy) and then a page:
    the page is served by the database threads while the checks wait for theirs, so it answers
    before all but the first few checks are done. Sharing one pool, it waited for ten."""
    with serving(tmp_path, monkeypatch, login_attempts_per_address=100, login_threads=2) as browser:
        alice = logged_in(browser, "alice")
        token, cookie = alice.xsrf(), alice.cookie("_xsrf")
        host, port = urlsplit(browser.base).hostname, urlsplit(browser.base).port
        finished: list[float] = []
        lock = threading.Lock()

        def answer(conn: http.client.HTTPConnection) -> None:
            status = conn.getresponse().status
            with lock:
                finished.append(time.monotonic())
            assert status == 401

        connections = []
        for n in range(16):
            conn = http.client.HTTPConnection(host, port, timeout=120)
            body = urlencode({"username": f"flood{n}", "password": "x", "_xsrf": token})
            headers = {
                "Cookie": f"_xsrf={cookie}",
                "Content-Type": "application/x-www-form-urlencoded",
            }
            conn.request("POST", "/login", body, headers)  # sent in full before the page
            connections.append(conn)
        waiters = [threading.Thread(target=answer, args=(c,)) for c in connections]
        for waiter in waiters:
            waiter.start()
        assert can_read(alice)
        page_done = time.monotonic()
        for waiter in waiters:
            waiter.join(120)
        assert len(finished) == 16
        before_page = sum(1 for t in finished if t < page_done)
        assert before_page <= 4, (before_page, sorted(t - page_done for t in finished))


def test_the_throttle_refills_over_its_window() -> None:
    """Three attempts per name and four per address in 30 s: a name's token every 10 s, an
    address's every 7.5 s."""
    now = [0.0]
    throttle = LoginThrottle(3, 4, 30.0, clock=lambda: now[0])
    assert [throttle.begin("alice", "10.0.0.1") for _ in range(3)] == [0, 0, 0]
    assert throttle.begin("alice", "10.0.0.1") == 10
    now[0] = 9.5
    assert throttle.begin("alice", "10.0.0.1") == 1  # half a second, rounded up
    now[0] = 10.0
    assert throttle.begin("alice", "10.0.0.1") == 0
    # The address has 1 + 10 / 7.5 - 1 tokens left: one more name, then 5 s to wait.
    assert throttle.begin("bob", "10.0.0.1") == 0
    assert throttle.begin("carol", "10.0.0.1") == 5
    # A right password gives the address back the token its attempt took.
    throttle.succeeded("bob", "10.0.0.1")
    assert throttle.begin("carol", "10.0.0.1") == 0


def test_the_throttle_counts_an_ipv6_host_by_its_64_and_forgets_old_buckets() -> None:
    assert address_key("2001:db8:1:2:aaaa::1") == address_key("2001:db8:1:2:bbbb::2")
    assert address_key("2001:db8:1:2::1") != address_key("2001:db8:1:3::1")
    assert address_key("::ffff:10.0.0.1") == "10.0.0.1"
    now = [0.0]
    throttle = LoginThrottle(1, 100, 60.0, max_keys=2, clock=lambda: now[0])
    assert throttle.begin("a", "h") == 0
    assert throttle.begin("a", "h") > 0
    assert throttle.begin("b", "h") == 0 and throttle.begin("c", "h") == 0
    assert throttle.begin("a", "h") == 0  # forgotten: the table holds two names at most


# --- sessions --------------------------------------------------------------------------------


def test_logout_ends_the_session_for_every_copy_of_its_cookie(browser: Browser) -> None:
    alice = logged_in(browser, "alice")
    thief = browser.client()
    for cookie in alice.jar:
        thief.jar.set_cookie(copy.copy(cookie))
    assert can_read(thief)
    answer = alice.request("POST", "/logout", {"_xsrf": alice.cookie("_xsrf") or ""})
    assert (answer.status, answer.headers["Location"]) == (302, "/login")
    assert not can_read(alice)
    assert not can_read(thief)


def test_log_out_everywhere_ends_every_session_of_the_user(browser: Browser) -> None:
    here, there, bob = (
        logged_in(browser, "alice"),
        logged_in(browser, "alice"),
        logged_in(browser, "bob"),
    )
    form = {"_xsrf": here.cookie("_xsrf") or "", "everywhere": "yes"}
    assert here.request("POST", "/logout", form).status == 302
    assert not can_read(here)
    assert not can_read(there)
    assert can_read(bob)


def test_passwd_sets_the_password_and_ends_every_session(browser: Browser) -> None:
    config = browser.root / "edgecelery.toml"
    before = tomllib.loads(config.read_text())
    here, there, bob = (
        logged_in(browser, "alice"),
        logged_in(browser, "alice"),
        logged_in(browser, "bob"),
    )
    result = CliRunner().invoke(main, ["web", "passwd", "alice"], input="new-secret\nnew-secret\n")
    assert result.exit_code == 0, result.output
    assert "2 session(s) ended" in result.output
    assert not can_read(here) and not can_read(there)
    assert can_read(bob)
    # The running browser read the file again: the old password is refused, the new one works.
    assert attempt(browser.client(), "alice", PASSWORDS["alice"]).status == 401
    assert attempt(browser.client(), "alice", "new-secret").status == 302
    # Nothing else in the settings changed.
    after = tomllib.loads(config.read_text())
    assert after["web"]["users"].pop("alice") != before["web"]["users"].pop("alice")
    assert after == before


def test_passwd_refuses_an_unknown_user(browser: Browser) -> None:
    result = CliRunner().invoke(main, ["web", "passwd", "mallory"], input="pw\npw\n")
    assert result.exit_code == 2
    assert "web.users.mallory: no such user" in result.output


def test_a_hash_changed_by_hand_ends_the_sessions_of_the_old_password(browser: Browser) -> None:
    alice, bob = logged_in(browser, "alice"), logged_in(browser, "bob")
    config = browser.root / "edgecelery.toml"
    text = config.read_text()
    old = tomllib.loads(text)["web"]["users"]["alice"]
    config.write_text(text.replace(old, hash_password("by-hand", iterations=1000)))
    assert not can_read(alice)
    assert can_read(bob)
    assert attempt(browser.client(), "alice", "by-hand").status == 302


SETTINGS = """\
# the browser
[web]
cookie_secret = "s"  # signs
[web.users]
alice = "old-a"   # the operator
"bob.smith" = 'old-b'

[argo]
alice = "not a user"
"""


def test_with_password_changes_one_line_and_nothing_else() -> None:
    changed = with_password(SETTINGS, "alice", "new")
    assert changed == SETTINGS.replace('alice = "old-a"   # the operator', 'alice = "new"')
    changed = with_password(SETTINGS, "bob.smith", "new")
    assert changed == SETTINGS.replace("\"bob.smith\" = 'old-b'", '"bob.smith" = "new"')


@pytest.mark.parametrize(
    "text",
    [
        '[web]\nusers = { alice = "old" }\n',  # an inline table
        '[web.users]\nbob = "b"\n[argo]\nalice = "x"\n',  # alice's line is in another table
        '[web.users]\nalice = """old\nstill old"""\n',  # a string of two lines
    ],
)
def test_with_password_refuses_what_it_cannot_edit_safely(text: str) -> None:
    with pytest.raises(ConfigurationError, match=r"web\.users(\.alice)?:"):
        with_password(text, "alice", "new")


# --- reading never takes the write lock ------------------------------------------------------


def test_pages_answer_while_another_connection_holds_the_write_lock(browser: Browser) -> None:
    alice = logged_in(browser, "alice")
    alice.timeout = 10  # the database waits 60 s for a lock; a read must not wait at all
    job = browser.ids["atlas.wjets"][0]
    holder = sqlite3.connect(browser.root / "edgecelery.db", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        for path in ("/jobs", "/jobs?state=HISTORY&sort=updated", f"/jobs/{job}"):
            assert alice.get(path).status == 200, path
        for path in ("/api/jobs", "/api/jobs?site=alpha", f"/api/jobs/{job}"):
            assert alice.get(path).status == 200, path
    except TimeoutError:
        pytest.fail("a page waited for the write lock")
    finally:
        holder.execute("ROLLBACK")
        holder.close()


def test_sessions_open_end_and_expire_on_both_databases(any_db_env) -> None:  # type: ignore[no-untyped-def]
    users = {"alice": "hash-a", "bob": "hash-b"}
    here = sessions.open_session("alice", "hash-a", "127.0.0.1", hours=1)
    there = sessions.open_session("alice", "hash-a", "::1", hours=1)
    bob = sessions.open_session("bob", "hash-b", "127.0.0.1", hours=1)
    assert here != there
    found = [sessions.session_user(t, users) for t in (here, there, bob)]
    assert found == ["alice", "alice", "bob"]
    assert sessions.session_user("not-a-token", users) is None
    # A new hash for alice ends her sessions; a user no longer listed has none.
    assert sessions.session_user(here, {**users, "alice": "hash-a2"}) is None
    assert sessions.session_user(bob, {"alice": "hash-a"}) is None
    sessions.end_session(here)
    assert sessions.session_user(here, users) is None
    assert sessions.session_user(there, users) == "alice"
    assert sessions.end_sessions("alice") == 1
    assert sessions.session_user(there, users) is None
    assert sessions.session_user(bob, users) == "bob"
    # An expired session is no session, and the next login clears it from the table.
    gone = sessions.open_session("bob", "hash-b", "127.0.0.1", hours=-1)
    assert sessions.session_user(gone, users) is None
    sessions.open_session("bob", "hash-b", "127.0.0.1", hours=1)
    with session_scope() as s:
        assert s.scalar(select(func.count()).select_from(WebSession)) == 2
