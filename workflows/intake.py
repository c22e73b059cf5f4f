"""Intake: a validated message becomes records (all or nothing) and then a running chain.

The central service knows the configured sites, so a subjob naming an unknown site is refused
here, with the other field errors, before anything is stored.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from sqlalchemy import bindparam, insert, select
from sqlalchemy.exc import IntegrityError

from backends.transfers import scope as transfer_scope
from edgeceleryapp import graph, leases, next_step, site_handoff, state_store
from edgeceleryapp.brokertransport import batch_producer
from edgeceleryapp.db import read_connection, read_scope
from edgeceleryapp.errors import TransientError, ValidationFailed
from edgeceleryapp.models import MESSAGE_FIELDS, ArgoJob, SubJob
from edgeceleryapp.settings import get_settings
from edgeceleryapp.state_store import move_argo, move_subjob
from workflows import chains
from workflows.schemas import ArgoJobMessage, BalsamJobMessage
from workflows.validation import parse_json, validate_argo, validate_balsam

log = logging.getLogger(__name__)

# Multi-row inserts that return the new ids in the order of their rows.
_INSERT_ARGOS = insert(ArgoJob.__table__).returning(
    ArgoJob.__table__.c.id, sort_by_parameter_order=True
)
_INSERT_SUBJOBS = insert(SubJob.__table__).returning(
    SubJob.__table__.c.id, sort_by_parameter_order=True
)
_BY_INTAKE_KEY = select(ArgoJob.__table__.c.id, ArgoJob.__table__.c.state).where(
    ArgoJob.__table__.c.intake_key == bindparam("intake_key")
)
_BY_INTAKE_KEYS = select(
    ArgoJob.__table__.c.intake_key, ArgoJob.__table__.c.id, ArgoJob.__table__.c.state
).where(ArgoJob.__table__.c.intake_key.in_(bindparam("intake_keys", expanding=True)))


def _as_data(message: Any) -> Any:
    return parse_json(message) if isinstance(message, str | bytes) else message


def site_errors(sites: list[tuple[str, Any]]) -> list[tuple[str, str]]:
    known = get_settings().sites
    return [
        (
            field,
            f"no site named {name!r} is configured (known: {', '.join(sorted(known)) or 'none'})",
        )
        for field, name in sites
        if isinstance(name, str) and name not in known
    ]


def url_errors(
    urls: list[tuple[str, Any, str | None]], argo_id: int | None = None
) -> list[tuple[str, str]]:
    """Each (field, URL, site or None for the Argo job's own) against the scope of a job of
    Argo job ``argo_id`` at that site (None: a message not stored yet, which has no staging
    directory of its own): its transfer roots, never a staging or work directory, never a
    control directory (``backends.transfers.scope``). Schemes and hosts are the site's to
    judge when it transfers: its plug-ins and network are its own."""
    settings = get_settings()
    errors = []
    for field, url, site in urls:
        if not isinstance(url, str) or (site is not None and site not in settings.sites):
            continue
        if argo_id is None:
            scope = transfer_scope.at_intake(settings, site)
        elif site is None:
            scope = transfer_scope.for_argo(settings, argo_id)
        else:
            scope = transfer_scope.for_site(settings, site, argo_id)
        if (problem := scope.problem(url)) is not None:
            errors.append((field, f"{url}: {problem}"))
    return errors


def _checked(
    validate: Any,
    data: Any,
    sites: list[tuple[str, Any]],
    urls: list[tuple[str, Any, str | None]],
) -> Any:
    """Schema errors, unknown sites and URLs a site may not use, reported together."""
    errors: list[tuple[str, str]] = []
    message = None
    try:
        message = validate(data)
    except ValidationFailed as exc:
        errors = list(exc.errors)
    if isinstance(message, ArgoJobMessage):
        errors += graph.problems(message.subjobs, graph.max_subjobs())
    elif isinstance(message, BalsamJobMessage) and message.parents is not None:
        errors.append(("parents", "only a subjob of an Argo job may name parents"))
    flagged = {field for field, _ in errors}
    errors += [e for e in site_errors(sites) if e[0] not in flagged]
    flagged = {field for field, _ in errors}
    for field, problem in url_errors(urls):  # a URL wrong at several candidates: said once
        if field not in flagged:
            errors.append((field, problem))
            flagged.add(field)
    if errors:
        raise ValidationFailed(errors)
    return message


def _urls(data: dict, prefix: str, site: str | None) -> list[tuple[str, Any, str | None]]:
    return [(f"{prefix}{key}", data.get(key), site) for key in ("input_url", "output_url")]


def _sites(data: dict, prefix: str = "") -> list[tuple[str, Any]]:
    """(field, name) of the site or each candidate site a subjob message names."""
    candidates = data.get("sites")
    if isinstance(candidates, list):
        return [(f"{prefix}sites[{i}]", name) for i, name in enumerate(candidates)]
    return [(f"{prefix}site", data.get("site"))]


def _site_urls(data: dict, prefix: str) -> list[tuple[str, Any, str | None]]:
    """The subjob's URLs, checked at each site it may run at (none named as text: no URL
    checks then, the schema reports the site)."""
    urls = []
    for _, site in _sites(data):
        if isinstance(site, str):
            urls += _urls(data, prefix, site)
    return urls


def checked_argo(data: Any) -> ArgoJobMessage:
    """An Argo job message this service can run: valid, every site configured, and every URL
    one its site (or the Argo service) may use."""
    subjobs = data.get("subjobs") if isinstance(data, dict) else None
    listed = [
        (i, sj) for i, sj in enumerate(subjobs if isinstance(subjobs, list) else [])
        if isinstance(sj, dict)
    ]  # fmt: skip
    sites = [field for i, sj in listed for field in _sites(sj, f"subjobs[{i}].")]
    urls = _urls(data, "", None) if isinstance(data, dict) else []
    for i, sj in listed:
        urls += _site_urls(sj, f"subjobs[{i}].")
    return _checked(validate_argo, data, sites, urls)


def checked_balsam(data: Any) -> BalsamJobMessage:
    if not isinstance(data, dict):
        return _checked(validate_balsam, data, [], [])
    return _checked(validate_balsam, data, _sites(data), _site_urls(data, ""))


def _subjob(message: BalsamJobMessage, **extra: Any) -> SubJob:
    return SubJob(**{f: getattr(message, f) for f in MESSAGE_FIELDS}, **extra)


def store_argo(message: ArgoJobMessage, intake_key: str | None = None) -> int:
    """Expects a message from ``checked_argo``: store it (see ``store_argos``)."""
    return store_argos([(message, intake_key)])[0]


def store_argos(items: list[tuple[ArgoJobMessage, str | None]]) -> list[int]:
    """Expects messages from ``checked_argo``, with their intake keys.

    Store each Argo job and its subjobs in CREATED, wiring each subjob's data to the next,
    all in one transaction: the intake consumer takes messages in batches.

    A subjob without URLs reads where the previous step left its data and writes to the
    staging area; explicit URLs in the message win (the HUST'17 paper: Argo sets these values).

    Three multi-row Core inserts (jobs, subjobs, events) whatever the batch size, and status
    messages built in the same transaction: intake is one process taking every job of a
    production system (bench/intake.py), and per-row statements, ORM flushes and reading the
    events back were most of its time.
    """
    if not items:
        return []  # an empty multi-row insert would insert one row of defaults
    staging = get_settings().argo.staging_url_for
    with state_store.transaction() as tx:
        conn = tx.conn
        argo_ids = list(
            conn.execute(
                _INSERT_ARGOS,
                [
                    {
                        "user_id": message.user_id,
                        "name": message.name,
                        "description": message.description,
                        "group_identifier": message.group_identifier,
                        "username": message.username,
                        "email": message.email,
                        "input_url": message.input_url,
                        "output_url": message.output_url,
                        "job_status_routing_key": message.job_status_routing_key or "",
                        "num_subjobs": len(message.subjobs),
                        "intake_key": intake_key,
                        **_graph_counts(message),
                    }
                    for message, intake_key in items
                ],
            ).scalars()
        )
        subjob_rows = []
        for (message, _), argo_id in zip(items, argo_ids, strict=True):
            subjob_rows += _subjob_rows(message, argo_id, staging)
        subjob_ids = conn.execute(_INSERT_SUBJOBS, subjob_rows).scalars().all()
        created: list[tuple[int, int | None, tuple[str | None, str, str | None]]] = []
        edges: list[dict] = []
        taken = iter(subjob_ids)
        for (message, _), argo_id in zip(items, argo_ids, strict=True):
            key = message.job_status_routing_key
            ids = [next(taken) for _ in message.subjobs]
            created.append((argo_id, None, (key, message.name, None)))
            created += [
                (argo_id, ident, (key, sj.name, sj.site))
                for sj, ident in zip(message.subjobs, ids, strict=True)
            ]
            if graph.is_graph(message.subjobs):
                by_name = {sj.name: ident for sj, ident in zip(message.subjobs, ids, strict=True)}
                edges += graph.edge_rows(argo_id, by_name, message.subjobs)
        if edges:
            conn.execute(insert(graph.EDGES), edges)
        tx.created(created)
    return argo_ids


def _graph_counts(message: ArgoJobMessage) -> dict[str, Any]:
    """A graph job's columns: every subjob open, none stuck (NULL for a linear job)."""
    if not graph.is_graph(message.subjobs):
        return {"graph": None, "open_subjobs": None, "stuck_subjobs": None}
    return {"graph": True, "open_subjobs": len(message.subjobs), "stuck_subjobs": 0}


def _subjob_rows(message: ArgoJobMessage, argo_id: int, staging: Any) -> list[dict]:
    """The rows of an Argo job's subjobs, each wired to its data: a linear job's subjob reads
    the previous one's output and the last writes the job's output; a graph's subjobs read
    their parents' (``graph.default_urls``)."""
    staged_input = staging(str(argo_id), "input") if message.input_url else None
    if graph.is_graph(message.subjobs):
        urls = graph.default_urls(
            message.subjobs, staged_input, lambda i: staging(str(argo_id), f"sub{i}"), {}
        )
        lefts: list[int | None] = [len(set(sj.parents or [])) for sj in message.subjobs]
    else:
        urls, previous = [], staged_input
        last = len(message.subjobs) - 1
        for i, sj in enumerate(message.subjobs):
            output = sj.output_url or staging(str(argo_id), "output" if i == last else f"sub{i}")
            urls.append((sj.input_url or previous, output))
            previous = output
        lefts = [None] * len(message.subjobs)
    return [
        {
            **{f: getattr(sj, f) for f in MESSAGE_FIELDS},
            "argo_job_id": argo_id,
            "position": i,
            "input_url": given,
            "output_url": output,
            "parents_left": left,
        }
        for i, (sj, (given, output), left) in enumerate(
            zip(message.subjobs, urls, lefts, strict=True)
        )
    ]


def store_balsam(message: BalsamJobMessage) -> int:
    with state_store.transaction() as tx:
        subjob = _subjob(
            message,
            input_url=message.input_url,
            output_url=message.output_url,
            origin_argo_job_id=message.argo_job_id,
        )
        tx.session.add(subjob)
        tx.session.flush()
        tx.created([(None, subjob.id, (None, subjob.name, subjob.site))])
        return subjob.id


def _start(owed: next_step.Owed, what: str, fail: Callable[[str], object]) -> None:
    """Send a new job's first chain. If the broker refuses, the job takes the failure state of
    the step it could not send, saying so, and the caller is told to come back."""
    try:
        chains.send(chains.chain_for(owed))
    except Exception as exc:  # the broker refused or is away: say so on the record
        fail(f"could not queue the job's first step: {exc}")
        raise TransientError(
            f"{what} stored but not started (broker: {exc}); start it with `edgecelery retry`"
        ) from exc


def _owed_new_argo(argo_id: int) -> next_step.Owed:
    return next_step.for_argo(next_step.Record(argo_id, "CREATED"), None)


def existing_argo(intake_key: str) -> tuple[int, str] | None:
    """The job a message with this id already made (asked once per intake message)."""
    with read_scope() as s:
        row = s.execute(_BY_INTAKE_KEY, {"intake_key": intake_key}).first()
    return (row[0], row[1]) if row else None


def existing_argos(intake_keys: list[str]) -> dict[str, tuple[int, str]]:
    """The jobs that messages with these ids already made: one query for a batch."""
    if not intake_keys:
        return {}
    with read_connection() as conn:
        rows = conn.execute(_BY_INTAKE_KEYS, {"intake_keys": intake_keys})
        return {key: (argo_id, state) for key, argo_id, state in rows}


def submit_argo(message: Any, *, start: bool = True, intake_key: str | None = None) -> int:
    """Validate, store and start an Argo job; returns its id.

    With ``intake_key`` (the producer's message id) a message delivered again returns the job
    the first delivery created, and starts it if that delivery died before starting it.
    """
    found = existing_argo(intake_key) if intake_key else None
    if found is None:
        checked = checked_argo(_as_data(message))
        try:
            argo_id = store_argo(checked, intake_key)
        except IntegrityError:
            found = existing_argo(intake_key) if intake_key else None
            if found is None:
                raise
    if found is not None:
        argo_id, state = found
        if start and state == "CREATED":
            chains.send(chains.chain_for(_owed_new_argo(argo_id)))
        return argo_id
    if start:
        owed = _owed_new_argo(argo_id)
        _start(
            owed,
            f"argo job {argo_id}",
            lambda why: move_argo(argo_id, "CREATED", owed.fails_to, why),
        )
    else:
        leases.hold(leases.ARGO_JOBS, argo_id)
    return argo_id


def submit_argo_batch(items: list[tuple[Any, str | None]]) -> list[int | ValidationFailed]:
    """``submit_argo`` for a batch of intake messages (body, message id): each one's job id,
    or the ``ValidationFailed`` that refused it.

    Valid new jobs are stored in one transaction and their first chains published in one
    broker batch; a message delivered again gets the job its first delivery made. If another
    consumer stored one of these messages meanwhile (the intake key is unique), the batch is
    taken one message at a time instead.
    """
    found = existing_argos([key for _, key in items if key])
    outcomes: list[int | ValidationFailed] = []
    new: list[tuple[int, ArgoJobMessage, str | None]] = []
    to_start: list[int] = []
    first_of: dict[str, int] = {}  # a message id seen earlier in this batch: its position
    again: list[tuple[int, int]] = []
    for i, (message, key) in enumerate(items):
        if key and key in found:
            argo_id, state = found[key]
            outcomes.append(argo_id)
            if state == "CREATED" and argo_id not in to_start:
                to_start.append(argo_id)
            continue
        if key and key in first_of:
            again.append((i, first_of[key]))
            outcomes.append(0)  # the first one's outcome, below
            continue
        if key:
            first_of[key] = i
        try:
            new.append((i, checked_argo(_as_data(message)), key))
            outcomes.append(0)  # its id once stored
        except ValidationFailed as exc:
            outcomes.append(exc)
    try:
        ids = store_argos([(checked, key) for _, checked, key in new])
    except IntegrityError:
        return [_one_of_batch(message, key) for message, key in items]
    for (i, _, _), argo_id in zip(new, ids, strict=True):
        outcomes[i] = argo_id
    for i, first in again:
        outcomes[i] = outcomes[first]
    start_argos(to_start + ids)
    return outcomes


def _one_of_batch(message: Any, key: str | None) -> int | ValidationFailed:
    try:
        return submit_argo(message, intake_key=key)
    except ValidationFailed as exc:
        return exc


def start_argos(argo_ids: list[int]) -> None:
    """Publish the first chain of each job, all in one broker batch (Redis: one round trip
    for the tasks and their task-sent events). If the broker refuses, every job of the batch
    is marked failed to start (a job whose task got out anyway has moved on, and the
    compare-and-set leaves it alone) and the messages are taken again later."""
    if not argo_ids:
        return
    owed = [_owed_new_argo(argo_id) for argo_id in argo_ids]
    try:
        with batch_producer(get_settings().broker_url) as producer:
            for first in owed:
                chains.send(chains.chain_for(first), producer)
    except Exception as exc:
        for first in owed:
            move_argo(first.argo_id, "CREATED", first.fails_to, f"could not queue: {exc}")
        raise TransientError(
            f"{len(argo_ids)} argo jobs stored but not started (broker: {exc}); "
            "start them with `edgecelery retry`"
        ) from exc


def submit_balsam(message: Any, *, start: bool = True) -> int:
    """Validate, store and start a Balsam-only job (a chain of one subjob); returns its id."""
    checked = checked_balsam(_as_data(message))
    subjob_id = store_balsam(checked)
    if start:
        owed = next_step.for_subjob(next_step.Record(subjob_id, "CREATED", checked.site))
        owed = site_handoff.placed(owed, checked.sites)
        _start(
            owed,
            f"job {subjob_id}",
            lambda why: move_subjob(subjob_id, "CREATED", [owed.fails_to], why),
        )
    else:
        leases.hold(leases.SUBJOBS, subjob_id)
    return subjob_id
