"""The application whitelist (the HUST'17 paper, 2.6): which applications each site may run, and the
scripts around them. A site worker runs nothing that is not registered here for its site."""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy import select

from edgeceleryapp.db import read_scope, session_scope
from edgeceleryapp.errors import NotFound, ValidationFailed
from edgeceleryapp.job_views import as_dict
from edgeceleryapp.models import Application, public_columns
from edgeceleryapp.settings import get_settings

APP_COLUMNS = public_columns(Application)


def _check_paths(fields: dict[str, str | None]) -> None:
    errors = [
        (f, "must be an absolute path")
        for f, v in fields.items()
        if f != "description"
        and v is not None
        and not v.startswith("/")
        and (v or f == "executable")
    ]
    if errors:
        raise ValidationFailed(errors)


def add_app(name: str, site: str, executable: str, **fields: str | None) -> int:
    from workflows.schemas import NAME_PATTERN  # pydantic's schemas: `app ls` starts without

    errors = [
        (f, f"{v!r} is not a valid name")
        for f, v in (("name", name), ("site", site))
        if not re.match(NAME_PATTERN, v)
    ]
    if not errors and site not in get_settings().sites:
        errors.append(("site", f"no site named {site!r} is configured"))
    if errors:
        raise ValidationFailed(errors)
    _check_paths({"executable": executable, **fields})
    with session_scope() as s:
        if s.scalars(
            select(Application).where(Application.name == name, Application.site == site)
        ).first():
            raise ValidationFailed([("name", f"{name!r} is already registered at {site!r}")])
        app = Application(name=name, site=site, executable=executable, **fields)
        s.add(app)
        s.flush()
        return app.id


def list_apps(site: str | None = None) -> list[dict[str, Any]]:
    with read_scope() as s:
        query = select(Application).order_by(Application.site, Application.name)
        if site:
            query = query.where(Application.site == site)
        return [as_dict(a, APP_COLUMNS) for a in s.scalars(query)]


def _app(s: Any, name: str, site: str) -> Application:
    app = s.scalars(
        select(Application).where(Application.name == name, Application.site == site)
    ).first()
    if app is None:
        raise NotFound(f"no application {name!r} at site {site!r}")
    return app


def alter_app(name: str, site: str, **fields: str | None) -> None:
    changes = {k: v for k, v in fields.items() if v is not None}
    _check_paths(changes)
    with session_scope() as s:
        app = _app(s, name, site)
        for key, value in changes.items():
            setattr(app, key, value or None)


def remove_app(name: str, site: str) -> None:
    with session_scope() as s:
        s.delete(_app(s, name, site))
