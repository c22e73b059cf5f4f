"""What users read of jobs: the Argo job table (one query for the command line, the Python API
and the job browser, so a filter means the same everywhere), a job with its subjobs and
timeline, Balsam-only jobs, and counts per site and state.

Each filter and sort column of the table has an index ending in the id (see
``models.ArgoJob``), so a page is an index range read of ``size`` rows plus a count, fast at
100,000 jobs. A group filter is a prefix match written as a range (``>= prefix AND < prefix +
U+FFFF``) rather than LIKE, which SQLite cannot serve from an index when LIKE is
case-insensitive; a whole group identifier is a prefix of itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from sqlalchemy import Select, exists, func, select

from edgeceleryapp import states
from edgeceleryapp.db import read_scope
from edgeceleryapp.errors import NotFound, ValidationFailed
from edgeceleryapp.models import ArgoJob, JobEvent, SubJob, public_columns

ARGO_COLUMNS = public_columns(ArgoJob)
SUBJOB_COLUMNS = public_columns(SubJob)
EVENT_COLUMNS = public_columns(JobEvent)
SORTS = {
    "id": ArgoJob.id,
    "updated": ArgoJob.updated_at,
    "state": ArgoJob.state,
    "group": ArgoJob.group_identifier,
}


def as_dict(obj: Any, fields: tuple[str, ...]) -> dict[str, Any]:
    """A record's fields as JSON-ready values (times in ISO 8601, UTC)."""
    out = {}
    for f in fields:
        value = getattr(obj, f)
        out[f] = value.isoformat() + "Z" if hasattr(value, "isoformat") else value
    return out


def found(s: Any, model: type[ArgoJob] | type[SubJob], ident: int) -> Any:
    """The record, or NotFound in the words users know ("argo job 7", "job 12")."""
    record = s.get(model, ident)
    if record is None:
        raise NotFound(f"no {'argo job' if model is ArgoJob else 'job'} {ident}")
    return record


def state_named(machine: states.Machine, name: str) -> str:
    """A state a user typed, normalised; ValidationFailed names the field."""
    try:
        return machine.normalise(name)
    except ValueError as exc:
        raise ValidationFailed([("state", str(exc))]) from None


@dataclass(frozen=True)
class JobQuery:
    """A view of the Argo job table: filters (empty means any), the sort, the page."""

    group: str = ""
    state: str = ""
    site: str = ""
    sort: str = "id"
    descending: bool = True
    page: int = 1
    size: int = 50

    def checked(self) -> JobQuery:
        """The same query with the state normalised; ValidationFailed names bad fields."""
        errors = []
        state = self.state
        if state:
            try:
                state = state_named(states.ARGO, state)
            except ValidationFailed as exc:
                errors += exc.errors
        if self.sort not in SORTS:
            errors.append(("sort", f"one of {', '.join(SORTS)}"))
        if self.page < 1:
            errors.append(("page", "must be 1 or more"))
        if errors:
            raise ValidationFailed(errors)
        return replace(self, group=self.group.strip(), state=state, site=self.site.strip())


@dataclass
class JobPage:
    query: JobQuery
    rows: list[dict[str, Any]]
    total: int
    pages: int = field(init=False)

    def __post_init__(self) -> None:
        self.pages = max(1, -(-self.total // self.query.size))


def _filtered(query: JobQuery, base: Select) -> Select:
    if query.group:
        base = base.where(
            ArgoJob.group_identifier >= query.group,
            ArgoJob.group_identifier < query.group + "\uffff",
        )
    if query.state:
        base = base.where(ArgoJob.state == query.state)
    if query.site:
        base = base.where(
            exists().where(SubJob.argo_job_id == ArgoJob.id, SubJob.site == query.site)
        )
    return base


def job_page(query: JobQuery, count: bool = True) -> JobPage:
    """One page of the Argo job table, each row with its current subjob's ``site``, and the
    number of jobs that match (``count=False``: not counted, the listing command's case)."""
    query = query.checked()
    column = SORTS[query.sort]
    order = (column.desc(), ArgoJob.id.desc()) if query.descending else (column, ArgoJob.id)
    with read_scope() as s:
        total = s.scalar(_filtered(query, select(func.count(ArgoJob.id)))) if count else 0
        jobs = list(
            s.scalars(
                _filtered(query, select(ArgoJob))
                .order_by(*order)
                .limit(query.size)
                .offset((query.page - 1) * query.size)
            )
        )
        sites: dict[int, dict[int, str]] = {}
        if jobs:
            for argo_id, position, site in s.execute(
                select(SubJob.argo_job_id, SubJob.position, SubJob.site).where(
                    SubJob.argo_job_id.in_([j.id for j in jobs])
                )
            ):
                sites.setdefault(argo_id, {})[position] = site
        rows = []
        for job in jobs:
            row = as_dict(job, ARGO_COLUMNS)
            by_position = sites.get(job.id, {})
            row["site"] = by_position.get(min(job.current_subjob, max(by_position, default=0)), "")
            rows.append(row)
    return JobPage(query, rows, total or 0)


def list_argo(
    state: str | None = None, site: str | None = None, group: str | None = None, limit: int = 100
) -> list[dict[str, Any]]:
    """The newest Argo jobs that match (``group``: a prefix of the group identifier)."""
    query = JobQuery(group=group or "", state=state or "", site=site or "", size=limit)
    return job_page(query, count=False).rows


def show_argo(argo_id: int) -> dict[str, Any]:
    with read_scope() as s:
        job = found(s, ArgoJob, argo_id)
        out = as_dict(job, ARGO_COLUMNS)
        out["subjobs"] = [as_dict(sj, SUBJOB_COLUMNS) for sj in job.subjobs]
        out["events"] = _events(s, JobEvent.argo_job_id == argo_id)
        return out


def _events(s: Any, where: Any) -> list[dict[str, Any]]:
    query = select(JobEvent).where(where).order_by(JobEvent.id)
    return [as_dict(e, EVENT_COLUMNS) for e in s.scalars(query)]


def list_subjobs(
    site: str | None = None, state: str | None = None, limit: int = 100
) -> list[dict[str, Any]]:
    with read_scope() as s:
        query = select(SubJob).order_by(SubJob.id.desc()).limit(limit)
        if site:
            query = query.where(SubJob.site == site)
        if state:
            query = query.where(SubJob.state == state_named(states.BALSAM, state))
        return [as_dict(sj, SUBJOB_COLUMNS) for sj in s.scalars(query)]


def show_subjob(subjob_id: int) -> dict[str, Any]:
    with read_scope() as s:
        out = as_dict(found(s, SubJob, subjob_id), SUBJOB_COLUMNS)
        out["events"] = _events(s, JobEvent.subjob_id == subjob_id)
        return out


def state_counts() -> dict[str, dict[str, int]]:
    with read_scope() as s:
        rows = s.execute(
            select(SubJob.site, SubJob.state, func.count()).group_by(SubJob.site, SubJob.state)
        )
        out: dict[str, dict[str, int]] = {}
        for site, state, count in rows:
            out.setdefault(site, {})[state] = count
        return out
