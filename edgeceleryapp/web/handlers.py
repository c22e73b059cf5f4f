"""Request handlers of the job browser: login, the job table, the job page, the JSON API.

Every page and API call needs a live session (``web.sessions``: a signed cookie naming a row
that logout deletes); every change (POST, DELETE) also needs Tornado's XSRF token, from the
form's hidden field or the ``X-XSRFToken`` header. Only users listed as editors may change or
delete. The table is ``edgeceleryapp.job_views``'s query (the same as ``edgecelery argo ls``);
changes go through ``edgeceleryapp.job_control``, so they are compare-and-set, recorded as
JobEvents and published like any other change. Database calls run on a thread so one slow query
never stalls the loop; password checks run on threads of their own (``login_executor``), so a
burst of logins never delays a page, and only as often as ``web.login_throttle`` allows.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any, TypeVar
from urllib.parse import urlencode

import tornado.web
from tornado.ioloop import IOLoop

from edgeceleryapp import batch_logs, job_control, job_views, site_health, states
from edgeceleryapp.errors import InvalidState, NotFound, ValidationFailed
from edgeceleryapp.job_views import ANY_FAILURE, SORTS, JobQuery, job_page
from edgeceleryapp.local_time import event_time, shown
from edgeceleryapp.settings import WebSettings, get_settings
from edgeceleryapp.web import graph_drawing, sessions
from edgeceleryapp.web.accounts import Accounts
from edgeceleryapp.web.auth import check_password
from edgeceleryapp.web.login_throttle import LoginThrottle
from edgeceleryapp.web.redirects import local_target

T = TypeVar("T")
SESSION_COOKIE = "edgecelery_session"


# How much of the end of each batch output stream the job page shows.
LOG_TAIL_BYTES = 8192
# Seconds between the job page's looks at its job (static/refresh.js) while the job moves.
REFRESH_SECONDS = 5


class BaseHandler(tornado.web.RequestHandler):
    def get_template_namespace(self) -> dict[str, Any]:
        """What every page may use: times shown locally, failures told apart."""
        return super().get_template_namespace() | {
            "shown": shown,
            "event_time": event_time,
            "is_failed": states.is_failed,
        }

    @property
    def web(self) -> WebSettings:
        return self.settings["web"]

    @property
    def accounts(self) -> Accounts:
        return self.settings["accounts"]

    async def prepare(self) -> None:
        self.current_user = await self._session_user()

    def session_token(self) -> str | None:
        raw = self.get_signed_cookie(SESSION_COOKIE, max_age_days=self.web.session_hours / 24)
        try:
            return raw.decode("ascii") if raw else None
        except UnicodeDecodeError:
            return None

    async def _session_user(self) -> str | None:
        token = self.session_token()
        if token is None:
            return None
        return await self.blocking(sessions.session_user, token, self.accounts.users)

    @property
    def is_editor(self) -> bool:
        return self.current_user in self.accounts.editors

    def set_default_headers(self) -> None:
        self.set_header("X-Frame-Options", "DENY")
        self.set_header("X-Content-Type-Options", "nosniff")
        self.set_header("Content-Security-Policy", "default-src 'self'; form-action 'self'")
        self.set_header("Referrer-Policy", "same-origin")

    async def blocking(self, fn: Callable[..., T], *args: Any) -> T:
        return await IOLoop.current().run_in_executor(None, fn, *args)

    def error_text(self, status_code: int, kwargs: dict[str, Any]) -> str:
        """What went wrong, for the user: our HTTPError's message, else the status's reason."""
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(exc, tornado.web.HTTPError) and exc.log_message:
            return exc.log_message
        return self._reason

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        self.render("error.html", status=status_code, text=self.error_text(status_code, kwargs))

    def require_editor(self) -> None:
        if not self.is_editor:
            raise tornado.web.HTTPError(403, log_message="only editors may change jobs")


class LoginHandler(BaseHandler):
    def get(self) -> None:
        self.render("login.html", error="", next_url=self._next())

    def _next(self) -> str:
        return local_target(self.get_argument("next", ""))

    @property
    def throttle(self) -> LoginThrottle:
        return self.settings["login_throttle"]

    async def post(self) -> None:
        name = self.get_argument("username", "")
        password = self.get_argument("password", "")
        address = self.request.remote_ip or ""
        wait = self.throttle.begin(name, address)
        if wait:
            self.set_status(429)
            self.set_header("Retry-After", str(wait))
            error = f"Too many failed logins. Try again in {wait} seconds."
            self.render("login.html", error=error, next_url=self._next())
            return
        stored = self.accounts.users.get(name)
        executor: Executor = self.settings["login_executor"]
        ok = await IOLoop.current().run_in_executor(executor, check_password, password, stored)
        if not ok:
            self.set_status(401)
            self.render("login.html", error="Wrong user name or password.", next_url=self._next())
            return
        self.throttle.succeeded(name, address)
        token = await self.blocking(
            sessions.open_session, name, stored, address, self.web.session_hours
        )
        self.set_signed_cookie(
            SESSION_COOKIE,
            token,
            expires_days=self.web.session_hours / 24,
            httponly=True,
            samesite="Strict",
            secure=self.web.secure_cookies,
        )
        self.redirect(self._next())


class LogoutHandler(BaseHandler):
    """Ends this session; with ``everywhere=yes``, every session of this user (other browsers,
    other machines, a cookie someone copied)."""

    async def post(self) -> None:
        token = self.session_token()
        if self.current_user is not None and self.get_argument("everywhere", "") == "yes":
            await self.blocking(sessions.end_sessions, self.current_user)
        elif token is not None:
            await self.blocking(sessions.end_session, token)
        self.clear_cookie(SESSION_COOKIE)
        self.redirect("/login")


def _query_from(handler: BaseHandler) -> JobQuery:
    try:
        page = int(handler.get_argument("page", "1"))
    except ValueError:
        raise ValidationFailed([("page", "must be a number")]) from None
    return JobQuery(
        group=handler.get_argument("group", ""),
        state=handler.get_argument("state", ""),
        site=handler.get_argument("site", ""),
        sort=handler.get_argument("sort", "id"),
        descending=handler.get_argument("order", "desc") != "asc",
        page=page,
        size=handler.web.page_size,
    )


class JobsPage(BaseHandler):
    """The Argo job table (Figure 5)."""

    @tornado.web.authenticated
    async def get(self) -> None:
        try:
            result = await self.blocking(job_page, _query_from(self))
        except ValidationFailed as exc:
            raise tornado.web.HTTPError(400, log_message=str(exc)) from None
        q = result.query

        def link(**changes: Any) -> str:
            params = {
                "group": q.group,
                "state": q.state,
                "site": q.site,
                "sort": q.sort,
                "order": "desc" if q.descending else "asc",
                "page": q.page,
                **changes,
            }
            return "/jobs?" + urlencode({k: v for k, v in params.items() if v not in ("", None)})

        self.render(
            "jobs.html",
            result=result,
            link=link,
            sorts=SORTS,
            argo_states=states.ARGO.states,
            any_failure=ANY_FAILURE,
            sites=sorted(get_settings().sites),
            message=self.get_argument("msg", ""),
        )


class JobPage(BaseHandler):
    """One Argo job (Figure 6): every field, its subjobs, its timeline, and the changes."""

    @tornado.web.authenticated
    async def get(self, argo_id: str) -> None:
        try:
            job = await self.blocking(job_views.show_argo, int(argo_id))
        except NotFound:
            raise tornado.web.HTTPError(404, log_message=f"no argo job {argo_id}") from None
        logs = await self.blocking(_tails, job)
        self.render(
            "job.html",
            job=job,
            logs=logs,
            graph_svg=graph_drawing.svg(job["subjobs"]) if job.get("graph") else None,
            fields=job_views.ARGO_COLUMNS,
            argo_states=states.ARGO.states,
            moving=not states.has_stopped(states.ARGO, job["state"]),
            refresh_seconds=REFRESH_SECONDS,
            log_tail_kib=LOG_TAIL_BYTES // 1024,
            message=self.get_argument("msg", ""),
            error=self.get_argument("error", ""),
        )


class SitesPage(BaseHandler):
    """Every site's health: its worker, its queue, its jobs, its limit, breaker and errors."""

    @tornado.web.authenticated
    async def get(self) -> None:
        self.render("sites.html", sites=await self.blocking(site_health.all_sites))


def _tails(job: dict[str, Any]) -> dict[int, list[batch_logs.Tail]]:
    """The end of both output streams of each subjob that got as far as a batch job."""
    return {
        sj["id"]: batch_logs.tails(sj["id"], LOG_TAIL_BYTES)
        for sj in job["subjobs"]
        if sj["batch_job_id"] or sj["attempt"] > 1 or states.is_failed(sj["state"])
    }


class StateChange(BaseHandler):
    """Change a job's state: first a confirmation page, then the change itself."""

    @tornado.web.authenticated
    async def post(self, argo_id: str) -> None:
        self.require_editor()
        target = self.get_argument("state")
        if self.get_argument("confirm", "") != "yes":
            job = await self.blocking(_summary, int(argo_id))
            self.render("confirm.html", job=job, target=target)
            return
        try:
            done = await self.blocking(
                job_control.set_argo_state, int(argo_id), target, f"{self.current_user} (browser)"
            )
        except (InvalidState, ValidationFailed, NotFound) as exc:
            self.redirect(f"/jobs/{argo_id}?" + urlencode({"error": str(exc)}))
            return
        self.redirect(f"/jobs/{argo_id}?" + urlencode({"msg": f"state set to {done}"}))


class RetryJob(BaseHandler):
    """Run a failed job again from its failed step: first a confirmation page, then the same
    retry as ``edgecelery argo retry`` (recorded as a JobEvent naming the user, published)."""

    @tornado.web.authenticated
    async def post(self, argo_id: str) -> None:
        self.require_editor()
        if self.get_argument("confirm", "") != "yes":
            job = await self.blocking(_summary, int(argo_id))
            self.render("confirm_retry.html", job=job)
            return
        try:
            restarted = await self.blocking(
                job_control.retry_argo, int(argo_id), f"{self.current_user} (browser)"
            )
        except (InvalidState, NotFound) as exc:
            self.redirect(f"/jobs/{argo_id}?" + urlencode({"error": str(exc)}))
            return
        message = f"retrying: the job is back at {restarted}"
        self.redirect(f"/jobs/{argo_id}?" + urlencode({"msg": message}))


class DeleteJob(BaseHandler):
    """Delete a job after the "Yes, I'm sure" box is ticked (Figure 6)."""

    @tornado.web.authenticated
    async def post(self, argo_id: str) -> None:
        self.require_editor()
        if self.get_argument("sure", "") != "yes":
            self.redirect(
                f"/jobs/{argo_id}?" + urlencode({"error": "tick 'Yes, I'm sure' to delete"})
            )
            return
        try:
            await self.blocking(job_control.remove_argo, int(argo_id))
        except (InvalidState, NotFound) as exc:
            self.redirect(f"/jobs/{argo_id}?" + urlencode({"error": str(exc)}))
            return
        self.redirect("/jobs?" + urlencode({"msg": f"argo job {argo_id} deleted"}))


def _summary(argo_id: int) -> dict[str, Any]:
    job = job_views.show_argo(argo_id)
    return {k: job[k] for k in ("id", "name", "group_identifier", "state")}


class Root(BaseHandler):
    def get(self) -> None:
        self.redirect("/jobs")


# --- the JSON API ------------------------------------------------------------------------


class ApiHandler(BaseHandler):
    """JSON in and out; 401 (not a redirect to the login page) without a login."""

    async def prepare(self) -> None:
        await super().prepare()
        if self.current_user is None:
            raise tornado.web.HTTPError(401, log_message="log in first")

    def write_json(self, data: Any, status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(data, default=str))

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps({"error": self.error_text(status_code, kwargs)}))

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run an operation, turning our error types into HTTP answers."""
        try:
            return await self.blocking(fn, *args)
        except NotFound as exc:
            raise tornado.web.HTTPError(404, log_message=str(exc)) from None
        except InvalidState as exc:
            raise tornado.web.HTTPError(409, log_message=str(exc)) from None
        except ValidationFailed as exc:
            raise tornado.web.HTTPError(400, log_message=str(exc)) from None


class ApiJobs(ApiHandler):
    async def get(self) -> None:
        result = await self.run(job_page, _query_from(self))
        self.write_json(
            {
                "jobs": result.rows,
                "total": result.total,
                "page": result.query.page,
                "pages": result.pages,
                "page_size": result.query.size,
            }
        )


class ApiJob(ApiHandler):
    async def get(self, argo_id: str) -> None:
        self.write_json(await self.run(job_views.show_argo, int(argo_id)))

    async def delete(self, argo_id: str) -> None:
        self.require_editor()
        await self.run(job_control.remove_argo, int(argo_id))
        self.write_json({"deleted": int(argo_id)})


class ApiSites(ApiHandler):
    async def get(self) -> None:
        self.write_json(await self.run(site_health.all_sites))


class ApiJobState(ApiHandler):
    async def post(self, argo_id: str) -> None:
        self.require_editor()
        try:
            target = json.loads(self.request.body or b"{}")["state"]
        except (ValueError, KeyError, TypeError):
            raise tornado.web.HTTPError(400, log_message='body must be {"state": "..."}') from None
        done = await self.run(
            job_control.set_argo_state, int(argo_id), str(target), f"{self.current_user} (api)"
        )
        self.write_json({"id": int(argo_id), "state": done})
