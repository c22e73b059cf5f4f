"""The job table's queries (seed 000 Figure 5): filtered, sorted, paginated Argo jobs.

Each filter and sort column has an index ending in the id (see ``models.ArgoJob``), so a page
is an index range read of ``size`` rows plus a count, fast at 100,000 jobs. A group search is
a prefix match written as a range (``>= prefix AND < prefix + U+FFFF``) rather than LIKE, which
SQLite cannot serve from an index when LIKE is case-insensitive.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Select, exists, func, select

from edgeceleryapp import states
from edgeceleryapp.db import session_scope
from edgeceleryapp.errors import ValidationFailed
from edgeceleryapp.models import ArgoJob, SubJob

SORTS = {
    "id": ArgoJob.id,
    "updated": ArgoJob.updated_at,
    "state": ArgoJob.state,
    "group": ArgoJob.group_identifier,
}
COLUMNS = ("id", "updated_at", "user_id", "group_identifier", "site", "state", "output_url")


@dataclass(frozen=True)
class JobQuery:
    """What the table shows: filters (empty means any), the sort, the page."""

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
                state = states.ARGO.normalise(state)
            except ValueError as exc:
                errors.append(("state", str(exc)))
        if self.sort not in SORTS:
            errors.append(("sort", f"one of {', '.join(SORTS)}"))
        if self.page < 1:
            errors.append(("page", "must be 1 or more"))
        if errors:
            raise ValidationFailed(errors)
        return JobQuery(
            self.group.strip(),
            state,
            self.site.strip(),
            self.sort,
            self.descending,
            self.page,
            self.size,
        )


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


def _stamp(value: Any) -> Any:
    return value.isoformat() + "Z" if hasattr(value, "isoformat") else value


def job_page(query: JobQuery) -> JobPage:
    """One page of the job table and the number of jobs that match."""
    query = query.checked()
    column = SORTS[query.sort]
    order = (column.desc(), ArgoJob.id.desc()) if query.descending else (column, ArgoJob.id)
    with session_scope() as s:
        total = s.scalar(_filtered(query, select(func.count(ArgoJob.id))))
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
            row = {c: _stamp(getattr(job, c)) for c in COLUMNS if c != "site"}
            by_position = sites.get(job.id, {})
            row["site"] = by_position.get(min(job.current_subjob, max(by_position, default=0)), "")
            rows.append(row)
    return JobPage(query, rows, total or 0)


def site_names() -> list[str]:
    """The sites the filter offers: those configured here."""
    from edgeceleryapp.settings import get_settings

    return sorted(get_settings().sites)
