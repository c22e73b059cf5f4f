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
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Select, exists, func, select

from edgeceleryapp import batch_logs, graph, leases, next_step, site_health, states
from edgeceleryapp.db import read_scope
from edgeceleryapp.errors import NotFound, ValidationFailed
from edgeceleryapp.models import ArgoJob, JobEvent, SiteMonitor, SubJob, public_columns, utcnow
from edgeceleryapp.settings import get_settings

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


# A state filter for every failure state at once: failures are what an operator looks for
# first, and there are a dozen kinds of them.
ANY_FAILURE = "FAILED"


def state_filter(machine: states.Machine, name: str) -> str:
    """A state filter a user typed: a state, or ``failed`` for any failure."""
    if name.strip().upper() == ANY_FAILURE:
        return ANY_FAILURE
    try:
        return machine.normalise(name)
    except ValueError as exc:
        raise ValidationFailed([("state", f"{exc}; {ANY_FAILURE} means any failure")]) from None


def _state_is(column: Any, machine: states.Machine, state: str) -> Any:
    return column.in_(machine.failures) if state == ANY_FAILURE else column == state


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
                state = state_filter(states.ARGO, state)
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
        base = base.where(_state_is(ArgoJob.state, states.ARGO, query.state))
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


def _stamp(moment: datetime | None) -> str | None:
    return moment.isoformat(timespec="seconds") + "Z" if moment is not None else None


def waiting(record: Any, owed: next_step.Owed, now: datetime, position: int = 0) -> dict | None:
    """What a record waits for, as an operator asks: the execution holding its lease and
    until when, its subjob, its batch job, its place in the site's admission order, or when the
    reconciler sends its owed step again. None when it has ended or stopped."""
    if owed.verdict in (next_step.DONE, next_step.STOPPED):
        return None
    if record.lease_until is not None and record.lease_until > now:
        return {
            "for": "a step at work",
            "lease_holder": record.lease_owner,
            "lease_until": _stamp(record.lease_until),
        }
    if isinstance(record, ArgoJob) and owed.subjob_id is not None:
        return {"for": f"subjob {owed.subjob_id}"}
    if owed.verdict == next_step.PARKED:
        if record.waiting_since is not None:
            return {
                "for": "admission",
                "since": _stamp(record.waiting_since),
                "position": position,
                "reason": record.state_message,
            }
        return {"for": "its batch job", "batch_job_id": record.batch_job_id}
    if record.dispatched_at == leases.HELD:
        return {"for": "an operator: stored without starting"}
    last = max(t for t in (record.updated_at, record.dispatched_at) if t is not None)
    redrive = last + timedelta(seconds=get_settings().redrive_after)
    return {"for": owed.step, "redrive_at": _stamp(max(redrive, now))}


def _why(s: Any, record: Any, owed: next_step.Owed, wait: dict, now: datetime) -> str:
    """The wait in one sentence an operator acts on, computed now from the record and its
    site: "retrying stage-in in 40 s (attempt 3 of 8): connection refused", "waiting for
    admission at theta: 20 queued (limit 20), 37 ahead", "no worker has taken queue site.lab
    for 5 min"."""
    step = owed.step.rpartition(".")[2].replace("_", "-") if owed.step else ""
    kind = wait["for"]
    if kind == "a step at work":
        return f"{step or 'a step'} under way (lease until {wait['lease_until']})"
    if kind == "admission":
        site = get_settings().sites.get(record.site)
        if site is None:
            return record.state_message
        monitor = s.get(SiteMonitor, record.site)
        if monitor is not None and monitor.breaker_until is not None:
            return f"waiting for admission at {record.site}: breaker " + site_health.breaker(
                monitor, now
            )
        shown = site_health.admission(s, record.site, site)
        limit = "none" if shown["limit"] is None else shown["limit"]
        return (
            f"waiting for admission at {record.site}: {shown['queued']} queued "
            f"(limit {limit}), {wait['position'] - 1} ahead"
        )
    if kind == "its batch job":
        return f"batch job {record.batch_job_id} at {record.site} is {record.state}"
    if record.dispatched_at is not None and record.dispatched_at > now and record.state_message:
        return record.state_message  # a retry after back-off, with its reason
    if kind == "an operator: stored without starting":
        return "stored without starting: nothing runs it until an operator starts it"
    if kind.startswith("site."):
        since = max(t for t in (record.updated_at, record.dispatched_at) if t is not None)
        idle = site_health.no_worker(s, record.site, since, now)
        if idle is not None:
            return idle
    if "redrive_at" in wait:
        return f"{step} sent; sent again at {wait['redrive_at']} if no worker takes it"
    return kind


def _admission_position(s: Any, sj: SubJob) -> int:
    """1 for the next subjob the site admits."""
    ahead = s.scalar(
        select(func.count())
        .select_from(SubJob)
        .where(
            SubJob.site == sj.site,
            SubJob.state == "PREPROCESSED",
            SubJob.waiting_since.is_not(None),
            SubJob.id < sj.id,
        )
    )
    return (ahead or 0) + 1


def show_argo(argo_id: int) -> dict[str, Any]:
    now = utcnow()
    with read_scope() as s:
        job = found(s, ArgoJob, argo_id)
        out = as_dict(job, ARGO_COLUMNS)
        subjobs = list(job.subjobs)
        out["subjobs"] = [_with_waiting(s, sj, now) for sj in subjobs]
        for sj, shown in zip(subjobs, out["subjobs"], strict=True):
            handed_over = job.state == "SUBJOB_SUBMITTED" and job.current_subjob == sj.position
            if sj.state == "CREATED" and not handed_over and shown["waiting"]:
                shown["waiting"] = {
                    "for": "its turn in the Argo job",
                    "why": "the subjobs before it in the Argo job run first",
                }
        if job.graph:
            out["waiting"] = _graph_waits(s, job, subjobs, out["subjobs"])
            out["events"] = _events(s, JobEvent.argo_job_id == argo_id)
            return out
        current = subjobs[job.current_subjob] if job.current_subjob < len(subjobs) else None
        owed = next_step.for_argo(job, current)
        out["waiting"] = wait = waiting(job, owed, now)
        if wait is not None:
            by_id = {shown["id"]: shown for shown in out["subjobs"]}
            subjob_wait = by_id.get(owed.subjob_id, {}).get("waiting")
            if wait["for"].startswith("subjob ") and subjob_wait:
                wait["why"] = f"subjob {owed.subjob_id}: {subjob_wait['why']}"
            else:
                wait["why"] = _why(s, job, owed, wait, now)
        out["events"] = _events(s, JobEvent.argo_job_id == argo_id)
        return out


def _graph_waits(
    s: Any, job: ArgoJob, subjobs: list[SubJob], shown: list[dict[str, Any]]
) -> dict[str, Any] | None:
    """A graph job's subjobs each with their ``parents`` (names) and, for one that waits for
    them, which are left; what the Argo job itself waits for."""
    edges = graph.parents_of(s.connection(), job.id)
    by_id = {sj.id: sj for sj in subjobs}
    for sj, out in zip(subjobs, shown, strict=True):
        out["parents"] = [by_id[p].name for p in edges.get(sj.id, [])]
        left = [by_id[p].name for p in edges.get(sj.id, []) if by_id[p].state != "JOB_FINISHED"]
        if sj.state == "CREATED" and left and out["waiting"]:
            out["waiting"] = {
                "for": "its parents",
                "why": f"waiting for its parents to finish: {', '.join(left)}",
            }
    if job.state != states.GRAPH_RUNNING:
        if states.has_stopped(states.ARGO, job.state):
            return None
        owed = next_step.for_argo(job, None)
        wait = waiting(job, owed, utcnow())
        if wait is not None:
            wait["why"] = _why(s, job, owed, wait, utcnow())
        return wait
    running = [sj.name for sj in subjobs if sj.state not in ("CREATED", "JOB_FINISHED")]
    if not running:
        running = [sj.name for sj in subjobs if sj.state == "CREATED" and not sj.parents_left]
    return {"for": "its subjobs", "why": f"subjobs under way: {', '.join(running) or 'none'}"}


def _with_waiting(s: Any, sj: SubJob, now: datetime) -> dict[str, Any]:
    out = as_dict(sj, SUBJOB_COLUMNS)
    position = _admission_position(s, sj) if sj.waiting_since is not None else 0
    owed = next_step.for_subjob(sj)
    out["waiting"] = wait = waiting(sj, owed, now, position)
    if wait is not None:
        wait["why"] = _why(s, sj, owed, wait, now)
    out["workdir"] = batch_logs.workdir(sj.site, sj.id)
    return out


def _seen(event: JobEvent) -> bool:
    return states.seen_by_poller(event.from_state, event.to_state)


def _events(s: Any, where: Any) -> list[dict[str, Any]]:
    query = select(JobEvent).where(where).order_by(JobEvent.id)
    return [{**as_dict(e, EVENT_COLUMNS), "seen_by_poller": _seen(e)} for e in s.scalars(query)]


def list_subjobs(
    site: str | None = None, state: str | None = None, limit: int = 100
) -> list[dict[str, Any]]:
    with read_scope() as s:
        query = select(SubJob).order_by(SubJob.id.desc()).limit(limit)
        if site:
            query = query.where(SubJob.site == site)
        if state:
            query = query.where(
                _state_is(SubJob.state, states.BALSAM, state_filter(states.BALSAM, state))
            )
        return [as_dict(sj, SUBJOB_COLUMNS) for sj in s.scalars(query)]


def show_subjob(subjob_id: int) -> dict[str, Any]:
    with read_scope() as s:
        out = _with_waiting(s, found(s, SubJob, subjob_id), utcnow())
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
