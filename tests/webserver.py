"""The job browser as a real server process for tests, and a small cookie-keeping client.

The server is ``edgecelery web`` in a subprocess on a free loopback port, with users whose
password hashes are cheap (few PBKDF2 rounds) so logging in costs the tests nothing.
"""

from __future__ import annotations

import http.cookiejar
import os
import re
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from edgeceleryapp.devstack import free_port, wait_for, write_config
from edgeceleryapp.web.auth import hash_password

PASSWORDS = {"alice": "alice-secret", "bob": "bob-secret"}
EDITORS = ["alice"]
COOKIE_SECRET = "test-cookie-secret-" + "x" * 32


def web_settings() -> dict:
    """The [web] table: alice edits, bob only reads."""
    return {
        "cookie_secret": COOKIE_SECRET,
        "editors": EDITORS,
        "page_size": 5,
        "users": {name: hash_password(pw, iterations=1000) for name, pw in PASSWORDS.items()},
    }


def web_toml(**extra: int | float) -> str:
    """The [web] table as TOML; ``extra`` adds keys to it (numbers: the login limits)."""
    settings = web_settings()
    users = "\n".join(f'{n} = "{h}"' for n, h in settings["users"].items())
    more = "".join(f"{key} = {value}\n" for key, value in extra.items())
    return (
        f'[web]\ncookie_secret = "{COOKIE_SECRET}"\neditors = {EDITORS!r}\n'
        f"page_size = {settings['page_size']}\n{more}[web.users]\n{users}\n".replace("'", '"')
    )


def web_config(tmp_path: Path, **web: int | float) -> Path:
    """A settings file for the job browser's tests: sites alpha and beta, the test users and
    ``web`` added to [web], and transfer roots the seeded jobs' URLs lie in (their
    ``output_url`` is under /out)."""
    roots = {"transfer_roots": [str(tmp_path / "data"), "/out"]}
    return write_config(
        tmp_path, "memory://", ("alpha", "beta"), extra=web_toml(**web), argo_settings=roots
    )


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: str


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        return None


class Client:
    """Keeps cookies like a browser; never follows redirects, so tests see them."""

    def __init__(self, base: str, timeout: float = 30):
        self.base = base
        self.timeout = timeout
        self.jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(self.jar), _NoRedirect()
        )

    def request(
        self,
        method: str,
        path: str,
        data: dict[str, str] | bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> Response:
        body = urllib.parse.urlencode(data).encode() if isinstance(data, dict) else data
        req = urllib.request.Request(
            self.base + path, data=body, method=method, headers=headers or {}
        )
        try:
            with self.opener.open(req, timeout=self.timeout) as resp:
                return Response(resp.status, dict(resp.headers), resp.read().decode())
        except urllib.error.HTTPError as exc:
            return Response(exc.code, dict(exc.headers), exc.read().decode())

    def get(self, path: str) -> Response:
        return self.request("GET", path)

    def cookie(self, name: str) -> str | None:
        return next((c.value for c in self.jar if c.name == name), None)

    def xsrf(self) -> str:
        """The XSRF token, read from a form as a browser would."""
        page = self.get("/login")
        match = re.search(r'name="_xsrf" value="([^"]+)"', page.body)
        assert match, page.body
        return match.group(1)

    def login(self, user: str) -> Response:
        token = self.xsrf()
        return self.request(
            "POST", "/login", {"username": user, "password": PASSWORDS[user], "_xsrf": token}
        )


@contextmanager
def running_web(config: Path, log: Path) -> Iterator[str]:
    """``edgecelery web`` on a free port with the given settings; yields its base URL."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGECELERY_")}
    env["EDGECELERY_CONFIG"] = str(config)
    proc = subprocess.Popen(
        [sys.executable, "-m", "edgeceleryapp.cli", "web", "--port", str(port)],
        env=env,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"

    def up() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"edgecelery web exited: {log.read_text()}")
        try:
            with urllib.request.urlopen(base + "/login", timeout=1) as resp:
                return resp.status == 200
        except OSError:
            return False

    try:
        wait_for(up, 30, "the job browser to answer", interval=0.1)
        yield base
    finally:
        proc.terminate()
        proc.wait(10)
