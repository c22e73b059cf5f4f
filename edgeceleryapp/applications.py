"""The application whitelist (the HUST'17 paper, 2.6): which applications each site may run, and the
scripts around them. A site worker runs nothing that is not registered here for its site."""

from __future__ import annotations

import os
import re
from pathlib import Path
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


def _check_executable(path: str) -> None:
    """A site whose commands run on this machine can be asked now whether the program is
    there; otherwise the mistake shows only when the first job fails at submission."""
    if not Path(path).is_file():
        raise ValidationFailed([("executable", f"{path} does not exist or is not a file")])
    if not os.access(path, os.X_OK):
        raise ValidationFailed(
            [("executable", f"{path} is not executable (chmod +x, or name its interpreter)")]
        )


def add_app(name: str, site: str, executable: str, **fields: str | None) -> int:
    from workflows.schemas import NAME_PATTERN  # pydantic's schemas: `app ls` starts without

    errors = [
        (f, f"{v!r} is not a valid name")
        for f, v in (("name", name), ("site", site))
        if not re.match(NAME_PATTERN, v)
    ]
    sites = get_settings().sites
    if not errors and site not in sites:
        known = ", ".join(sorted(sites)) or "none; add a [sites.NAME] table to the settings"
        errors.append(("site", f"no site named {site!r} is configured (known: {known})"))
    if errors:
        raise ValidationFailed(errors)
    _check_paths({"executable": executable, **fields})
    if sites[site].runner == "local":
        _check_executable(executable)
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


def registered(sites: set[str]) -> dict[str, set[str]]:
    """The application names registered at each of ``sites``: what a message may name there."""
    found: dict[str, set[str]] = {site: set() for site in sites}
    with read_scope() as s:
        rows = s.execute(
            select(Application.site, Application.name).where(Application.site.in_(sites))
        )
        for site, name in rows:
            found[site].add(name)
    return found


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
    site_settings = get_settings().sites.get(site)
    if changes.get("executable") and site_settings and site_settings.runner == "local":
        _check_executable(changes["executable"])
    with session_scope() as s:
        app = _app(s, name, site)
        for key, value in changes.items():
            setattr(app, key, value or None)


def remove_app(name: str, site: str) -> None:
    with session_scope() as s:
        s.delete(_app(s, name, site))
