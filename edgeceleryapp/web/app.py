"""The job browser's Tornado application, and serving it.

Tornado because Flower already brings it: the browser adds no web framework, no template
engine and no server of its own to the dependencies. Pages are rendered on the server with
Tornado templates (autoescaped) and need no JavaScript; the JSON API serves scripts.
"""

from __future__ import annotations

import asyncio
import socket
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import tornado.web
from tornado.httpserver import HTTPServer
from tornado.netutil import bind_sockets

from edgeceleryapp.errors import ConfigurationError
from edgeceleryapp.settings import Settings, WebSettings, config_path
from edgeceleryapp.web import handlers
from edgeceleryapp.web.accounts import Accounts
from edgeceleryapp.web.login_throttle import LoginThrottle

HERE = Path(__file__).parent
MIN_SECRET = 32


def check(web: WebSettings) -> None:
    """Refuse to serve a browser that anyone could use: it changes and deletes jobs."""
    problems = []
    if not web.users:
        problems.append("web.users: no users (add one with `edgecelery web hash-password`)")
    if len(web.cookie_secret) < MIN_SECRET:
        problems.append(f"web.cookie_secret: must be at least {MIN_SECRET} characters")
    unknown = sorted(set(web.editors) - set(web.users))
    if unknown:
        problems.append(f"web.editors: not users: {', '.join(unknown)}")
    if problems:
        raise ConfigurationError("; ".join(problems))


def make_app(settings: Settings) -> tornado.web.Application:
    """The browser; the settings file is watched for changed users and passwords."""
    check(settings.web)
    web = settings.web
    routes = [
        (r"/", handlers.Root),
        (r"/login", handlers.LoginHandler),
        (r"/logout", handlers.LogoutHandler),
        (r"/jobs", handlers.JobsPage),
        (r"/jobs/(\d+)", handlers.JobPage),
        (r"/jobs/(\d+)/state", handlers.StateChange),
        (r"/jobs/(\d+)/retry", handlers.RetryJob),
        (r"/jobs/(\d+)/delete", handlers.DeleteJob),
        (r"/sites", handlers.SitesPage),
        (r"/api/sites", handlers.ApiSites),
        (r"/api/jobs", handlers.ApiJobs),
        (r"/api/jobs/(\d+)", handlers.ApiJob),
        (r"/api/jobs/(\d+)/state", handlers.ApiJobState),
    ]
    return tornado.web.Application(
        routes,
        web=web,
        accounts=Accounts(web, config_path()),
        login_throttle=LoginThrottle(
            web.login_attempts, web.login_attempts_per_address, web.login_window
        ),
        login_executor=ThreadPoolExecutor(web.login_threads, thread_name_prefix="web-login"),
        cookie_secret=web.cookie_secret,
        login_url="/login",
        xsrf_cookies=True,
        xsrf_cookie_kwargs={
            "httponly": True,
            "samesite": "Strict",
            "secure": web.secure_cookies,
        },
        template_path=str(HERE / "templates"),
        static_path=str(HERE / "static"),
        autoescape="xhtml_escape",
    )


def listen(settings: Settings, host: str, port: int) -> tuple[HTTPServer, int]:
    """Bind (port 0 picks a free one) and serve on the running loop; returns the port."""
    sockets = bind_sockets(port, host, family=socket.AF_INET)
    server = HTTPServer(make_app(settings), xheaders=False)
    server.add_sockets(sockets)
    return server, sockets[0].getsockname()[1]


async def serve(settings: Settings, host: str, port: int) -> None:
    """Serve until cancelled, printing the address once bound."""
    server, bound = listen(settings, host, port)
    print(f"job browser on http://{host}:{bound}/", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        server.stop()
