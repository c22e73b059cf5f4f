"""This deployment's instance tag, part of every batch job name.

A batch job is named after its subjob and attempt so that a re-run can find it by name; subjob
ids restart at 1 in a new database, and several deployments may share one batch system, so the
name also carries a tag that is unique to the database: ``ec<tag>_<subjob id>a<attempt>``
(short enough for Torque's 15 characters in most cases). The tag is made at random when the
database is first used, or set with the ``instance_tag`` setting.
"""

from __future__ import annotations

import secrets

from sqlalchemy.exc import IntegrityError

from edgeceleryapp.db import session_scope
from edgeceleryapp.models import ServiceInfo, SubjobView
from edgeceleryapp.settings import get_settings

_tags: dict[str, str] = {}


def instance_tag() -> str:
    settings = get_settings()
    if settings.instance_tag:
        return settings.instance_tag
    url = settings.database_url
    if url not in _tags:
        _tags[url] = _stored_tag()
    return _tags[url]


def _stored_tag() -> str:
    for _ in range(2):
        with session_scope() as s:
            row = s.get(ServiceInfo, "instance_tag")
            if row is not None:
                return row.value
        try:
            with session_scope() as s:
                s.add(ServiceInfo(key="instance_tag", value=secrets.token_hex(2)))
        except IntegrityError:  # another process made it first
            continue
    raise RuntimeError("could not read or create the instance tag")


def batch_job_name(subjob: SubjobView) -> str:
    """The scheduler-side name that lets a re-run find the batch job it already submitted."""
    return f"ec{instance_tag()}_{subjob.id}a{subjob.attempt}"
