"""Children spawned at run time: the subjob messages a postprocess leaves in
``children.json`` in its work directory (``edgeceleryapp/dag.py`` writes them), read, checked
like any job message and added to the Argo job.

They are added in the transaction that moves the spawning subjob to POSTPROCESSED
(``tasks.site.execute``), so they are added exactly once: a second delivery of the step finds
the subjob moved on and reads nothing, and a bad file fails the step with nothing stored.

What is checked, each problem named by its field (``children.json[1].parents``): the file
(size, JSON, a list), each child's fields (the schema of a subjob message), its site
(configured), its application (registered at that site: the whitelist), its URLs (what a
subjob of this Argo job may name), and, in the transaction, the graph they make with the
job's subjobs (unique names, known parents, no cycle, at most ``argo.max_subjobs`` in all).

A child that names no ``parents`` waits for the spawning subjob and reads its output, as
Balsam's ``spawn_child`` does. A linear Argo job (no ``parents`` anywhere) whose subjob spawns
becomes a graph job then: each subjob waits for the one before it, as it did in the line.
"""

from __future__ import annotations

import errno
import os
import re
from collections import Counter
from collections.abc import Callable
from itertools import pairwise
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import case, insert, select, tuple_, update

from backends.batchscript import CONTROL_DIR
from edgeceleryapp import graph, states
from edgeceleryapp.dag import CHILDREN_FILE
from edgeceleryapp.db import read_connection
from edgeceleryapp.errors import PermanentError, ValidationFailed
from edgeceleryapp.models import Application, ArgoJob, SubJob, SubjobView
from edgeceleryapp.settings import get_settings
from workflows.inbound import MAX_DEPTH, nesting_depth
from workflows.intake import site_errors, url_errors
from workflows.schemas import BalsamJobMessage
from workflows.validation import parse_json, validate_balsam

if TYPE_CHECKING:
    from edgeceleryapp.state_store import StateWriter

FIELD = CHILDREN_FILE  # how problems name the file: children.json[1].parents
INHERITED_FILE = "children.inherited.json"

_SUB = SubJob.__table__
_ARGO = ArgoJob.__table__
_APPS = Application.__table__


def _refused(problem: str) -> ValidationFailed:
    return ValidationFailed([(FIELD, problem)])


def read(workdir: Path) -> Any | None:
    """The decoded ``children.json`` of a work directory, None when there is none. The file
    is the job's own writing: read without following a link, at most ``message_max_bytes``
    (as an intake message), no deeper than a message may nest."""
    limit = get_settings().message_max_bytes
    try:
        fd = os.open(workdir / CHILDREN_FILE, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise _refused("is a symbolic link; write the file itself") from None
        raise PermanentError(f"{FIELD}: cannot read it: {exc.strerror}") from None
    with os.fdopen(fd, "rb") as fh:
        text = fh.read(limit + 1)
    if len(text) > limit:
        raise _refused(f"is larger than message_max_bytes ({limit} bytes)")
    try:
        data = parse_json(text)
    except ValidationFailed as exc:
        raise ValidationFailed([(FIELD, problem) for _, problem in exc.errors]) from None
    if nesting_depth(data, MAX_DEPTH) > MAX_DEPTH:
        raise _refused(f"is nested more than {MAX_DEPTH} levels deep")
    return data


def left_in(workdir: Path) -> bool:
    """Whether the subjob left a ``children.json`` (a link counts: its postprocess refuses
    it), without reading it: the poller asks for every job that ends."""
    return os.path.lexists(workdir / CHILDREN_FILE)


def set_aside_inherited(workdir: Path) -> None:
    """A ``children.json`` that came in with a subjob's input is its writer's (the parent
    that spawned, whose output this is), not this subjob's: moved into the control
    directory after the stage in, so this subjob's postprocess does not spawn the same
    children again."""
    found = workdir / CHILDREN_FILE
    if found.is_symlink() or found.exists():
        found.replace(workdir / CONTROL_DIR / INHERITED_FILE)


def _under(prefix: str, field: str) -> str:
    return prefix if field == "message" else f"{prefix}.{field}"


def _whitelist_errors(children: list[tuple[str, BalsamJobMessage]]) -> list[tuple[str, str]]:
    """A child's application must be registered at its site, as for any subjob (the
    HUST'17 paper, 2.6); said now rather than when the child's stage in refuses it."""
    pairs = {(m.application, m.site) for _, m in children}
    if not pairs:
        return []
    with read_connection() as conn:
        rows = conn.execute(
            select(_APPS.c.name, _APPS.c.site).where(
                tuple_(_APPS.c.name, _APPS.c.site).in_(sorted(pairs))
            )
        )
        known = {(name, site) for name, site in rows}
    sites = get_settings().sites
    return [
        (f"{prefix}.application", f"{m.application!r} is not registered at site {m.site!r}")
        for prefix, m in children
        if (m.application, m.site) not in known and m.site in sites
    ]


def checked(data: Any, spawner: SubjobView) -> list[BalsamJobMessage]:
    """The children in ``data`` as subjob messages of the spawner's Argo job, or
    ``ValidationFailed`` naming every problem found without the graph (the transaction
    checks that). A child without ``parents`` is given the spawner."""
    argo_id = spawner.argo_job_id
    if argo_id is None:
        raise _refused("only a subjob of an Argo job may spawn children; this job has none")
    if not isinstance(data, list):
        raise _refused("must be a JSON list of subjob messages")
    errors: list[tuple[str, str]] = []
    children: list[tuple[str, BalsamJobMessage]] = []
    for i, item in enumerate(data):
        prefix = f"{FIELD}[{i}]"
        try:
            message = validate_balsam(item)
        except ValidationFailed as exc:
            errors += [(_under(prefix, field), problem) for field, problem in exc.errors]
            continue
        if message.argo_job_id not in (None, argo_id):
            errors.append(
                (f"{prefix}.argo_job_id", f"names argo job {message.argo_job_id}; a child "
                 f"joins the spawning subjob's, {argo_id} (leave the field out)")
            )  # fmt: skip
        if message.parents is None:
            message = message.model_copy(update={"parents": [spawner.name]})
        children.append((prefix, message))
    errors += site_errors([(f"{prefix}.site", m.site) for prefix, m in children])
    urls = [
        (f"{prefix}.{key}", getattr(m, key), m.site)
        for prefix, m in children
        for key in ("input_url", "output_url")
    ]
    errors += url_errors(urls, argo_id)
    errors += _whitelist_errors(children)
    if errors:
        raise ValidationFailed(errors)
    return [m for _, m in children]


def spawned(spawner: SubjobView, workdir: Path) -> list[BalsamJobMessage]:
    """The checked children a subjob's postprocess left (none: an empty list)."""
    data = read(workdir)
    return [] if data is None else checked(data, spawner)


def _become_graph(tx: StateWriter, argo_id: int, spawner: SubjobView, count: int) -> None:
    """A linear Argo job whose subjob spawns turns into a graph job, in the spawning
    transaction: each subjob waits for the one before it (an edge where the line had an
    order), those not run yet count that parent as left, and the Argo job moves from
    SUBJOB_IN_POSTPROCESSED to SUBJOBS_RUNNING. Its past events stay as they were. In a
    graph a name is a parent's handle and a join's folder, so the names must allow it."""
    conn = tx.conn
    rows = conn.execute(
        select(_SUB.c.id, _SUB.c.name, _SUB.c.state)
        .where(_SUB.c.argo_job_id == argo_id)
        .order_by(_SUB.c.position)
        .with_for_update()
    ).all()
    shared = sorted(name for name, n in Counter(r.name for r in rows).items() if n > 1)
    unfit = [r.name for r in rows if not re.match(graph.FOLDER_NAME, r.name)]
    if shared or unfit:
        said = [f"shared: {', '.join(map(repr, shared))}"] if shared else []
        said += [f"not folder names: {', '.join(map(repr, unfit))}"] if unfit else []
        raise _refused(
            "this Argo job's subjobs run in a line, and taking children makes it a graph, "
            "where each subjob's name must be unique and a folder name (letters, digits "
            f"and _.+-); its names are not ({'; '.join(said)})"
        )
    edges = [
        {"argo_job_id": argo_id, "child_id": row.id, "parent_id": before.id}
        for before, row in pairwise(rows)
    ]
    if edges:
        conn.execute(insert(graph.EDGES), edges)
    waiting = _SUB.c.state == "CREATED"
    conn.execute(
        update(_SUB)
        .where(_SUB.c.argo_job_id == argo_id)
        .values(
            parents_left=case((waiting & (_SUB.c.position > 0), 1), else_=0),
            dispatched_at=case((waiting, None), else_=_SUB.c.dispatched_at),
        )
    )
    still_open = sum(1 for r in rows if r.state != "JOB_FINISHED")
    moved = tx.force_argo(
        argo_id,
        "SUBJOB_IN_POSTPROCESSED",
        states.GRAPH_RUNNING,
        f"subjob {spawner.name} spawned {count} children: the job runs as a graph from now "
        "on, each subjob after the one before it",
        graph=True,
        open_subjobs=still_open,
        stuck_subjobs=0,
    )
    if not moved:
        state = conn.execute(select(_ARGO.c.state).where(_ARGO.c.id == argo_id)).scalar()
        raise PermanentError(
            f"{FIELD}: argo job {argo_id} is {state}, not SUBJOB_IN_POSTPROCESSED; "
            "no children added"
        )


def adder(
    spawner: SubjobView, children: list[BalsamJobMessage]
) -> Callable[[StateWriter], list[int]]:
    """What the spawning subjob's move to POSTPROCESSED does in its transaction: turn a
    linear job into a graph, then add the children (``graph.add_subjobs``: the graph's
    checks, named ``children.json[i]...``). A problem rolls the whole move back."""

    def add(tx: StateWriter) -> list[int]:
        argo_id = spawner.argo_job_id
        in_graph = tx.conn.execute(
            select(_ARGO.c.graph).where(_ARGO.c.id == argo_id).with_for_update()
        ).scalar()
        if not in_graph:
            _become_graph(tx, argo_id, spawner, len(children))
        return graph.add_subjobs(tx, argo_id, children, prefix=FIELD)

    return add
