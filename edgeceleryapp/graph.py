"""The dependency graph of an Argo job whose subjobs name their ``parents``.

A subjob is ready when every parent has finished; ready subjobs start in parallel at their
sites; a failed subjob's descendants are BLOCKED. What is owed is still ``next_step``'s answer
(a graph only makes it richer), and every state change still goes through ``state_store``;
this module holds the rules of the graph itself and the few statements that keep it cheap:

- ``problems``: a graph's checks (unique names, known parents, no self-parent, no cycle, the
  configured size), pure, each problem naming its field (``subjobs[2].parents``);
- the edges live in ``subjob_parents`` and each subjob counts its unfinished parents
  (``parents_left``), lowered in the transaction that finishes a parent: deciding readiness
  is one indexed query over the ready subjobs (``CLAIM_READY``), never a scan of the job;
- ``add_subjobs``: subjobs added to a stored graph job, checked against the names it has,
  with their edges (children spawned at run time use it).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

from sqlalchemy import bindparam, func, insert, literal, select, update

from edgeceleryapp import states
from edgeceleryapp.errors import InvalidState, ValidationFailed
from edgeceleryapp.models import MESSAGE_FIELDS, ArgoJob, SubJob, SubjobParent, utcnow
from edgeceleryapp.settings import get_settings

if TYPE_CHECKING:
    from edgeceleryapp.state_store import StateWriter


class Named(Protocol):
    """What the checks read of a subjob message."""

    name: str
    parents: list[str] | None


# A subjob's name in a graph: its output folder's name in a join's work directory.
FOLDER_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,127}$"


def max_subjobs() -> int:
    return get_settings().argo.max_subjobs


def is_graph(subjobs: Sequence[Named]) -> bool:
    """A job is a graph when any subjob names ``parents`` (even an empty list: a root)."""
    return any(sj.parents is not None for sj in subjobs)


def _cycle(names: list[str], parents: list[list[str]]) -> list[int] | None:
    """The positions on one cycle among the new subjobs, in order, or None. Iterative, so a
    chain of thousands does not reach Python's recursion limit."""
    index = {name: i for i, name in enumerate(names)}
    colour = [0] * len(names)  # 0 unseen, 1 on the path, 2 done
    for start in range(len(names)):
        if colour[start]:
            continue
        path = [start]
        todo = [iter(index[p] for p in parents[start] if p in index)]
        colour[start] = 1
        while todo:
            nxt = next(todo[-1], None)
            if nxt is None:
                colour[path.pop()] = 2
                todo.pop()
            elif colour[nxt] == 1:
                return path[path.index(nxt) :]
            elif colour[nxt] == 0:
                colour[nxt] = 1
                path.append(nxt)
                todo.append(iter(index[p] for p in parents[nxt] if p in index))
    return None


def problems(
    subjobs: Sequence[Named],
    max_subjobs: int,
    existing: Sequence[str] = (),
    prefix: str = "subjobs",
) -> list[tuple[str, str]]:
    """Every problem of the graph ``subjobs`` make, added to a job that already has subjobs
    named ``existing`` (none for a new job), as (field, problem)."""
    errors: list[tuple[str, str]] = []
    total = len(existing) + len(subjobs)
    if total > max_subjobs:
        errors.append(
            (
                prefix,
                f"makes {total} subjobs; a job may have at most {max_subjobs} (argo.max_subjobs)",
            )
        )
    if not is_graph(subjobs) and not existing:
        return errors
    taken = {name: None for name in existing}
    first: dict[str, int] = {}
    for i, sj in enumerate(subjobs):
        if sj.name in taken or sj.name in first:
            where = "an existing subjob" if sj.name in taken else f"{prefix}[{first[sj.name]}]"
            errors.append(
                (
                    f"{prefix}[{i}].name",
                    f"{sj.name!r} is the name of {where} too; subjob names must be unique "
                    "when subjobs name parents",
                )
            )
        else:
            first[sj.name] = i
    for i, sj in enumerate(subjobs):
        if not re.match(FOLDER_NAME, sj.name):
            errors.append(
                (
                    f"{prefix}[{i}].name",
                    f"{sj.name!r}: in a job whose subjobs name parents, a name is also a folder "
                    "name (a join reads each parent's output from one): letters, digits and "
                    "_.+- only, starting with a letter or digit, at most 128",
                )
            )
    known = set(taken) | set(first)
    names = [sj.name for sj in subjobs]
    parent_lists = [list(sj.parents or []) for sj in subjobs]
    for i, sj in enumerate(subjobs):
        field = f"{prefix}[{i}].parents"
        seen: set[str] = set()
        for parent in parent_lists[i]:
            if parent == sj.name:
                errors.append((field, f"names the subjob itself ({parent!r})"))
            elif parent not in known:
                errors.append((field, f"names {parent!r}, which is no subjob of this job"))
            elif parent in seen:
                errors.append((field, f"names {parent!r} twice"))
            seen.add(parent)
    flagged = {field for field, _ in errors}
    if not any(f.endswith(".name") for f in flagged):
        acyclic = [
            [p for p in ps if p != names[i]] for i, ps in enumerate(parent_lists)
        ]  # a self-parent is reported above
        loop = _cycle(names, acyclic)
        if loop is not None:
            shown = " -> ".join(names[i] for i in [*loop, loop[0]])
            errors.append((f"{prefix}[{loop[0]}].parents", f"makes a cycle: {shown}"))
    return errors


def layers(parents: dict[str, list[str]]) -> dict[str, int]:
    """Each subjob's depth (roots 0, a child one below its deepest parent): the rows of a
    layered drawing, parents above children."""
    depth: dict[str, int] = {}
    for name in parents:
        stack = [name]
        while stack:
            top = stack[-1]
            if top in depth:
                stack.pop()
                continue
            waiting = [p for p in parents.get(top, []) if p not in depth and p in parents]
            if waiting:
                stack.extend(waiting)
            else:
                depth[top] = 1 + max(
                    (depth[p] for p in parents.get(top, []) if p in depth), default=-1
                )
                stack.pop()
    return depth


_SUB = SubJob.__table__
_ARGO = ArgoJob.__table__
EDGES = SubjobParent.__table__

# A finished parent lowers each child's count (state_store, in the finishing transaction).
LOWER_CHILDREN = (
    update(_SUB)
    .where(_SUB.c.id.in_(select(EDGES.c.child_id).where(EDGES.c.parent_id == bindparam("parent"))))
    .values(parents_left=_SUB.c.parents_left - 1, updated_at=bindparam("now"))
)
# The Argo job's counters after one subjob finished or got stuck; RETURNING the new values.
COUNT_FINISHED = (
    update(_ARGO)
    .where(_ARGO.c.id == bindparam("argo"))
    .values(open_subjobs=_ARGO.c.open_subjobs - 1)
    .returning(_ARGO.c.open_subjobs, _ARGO.c.stuck_subjobs, _ARGO.c.state)
)
COUNT_STUCK = (
    update(_ARGO)
    .where(_ARGO.c.id == bindparam("argo"))
    .values(stuck_subjobs=_ARGO.c.stuck_subjobs + bindparam("stuck"))
    .returning(_ARGO.c.open_subjobs, _ARGO.c.stuck_subjobs, _ARGO.c.state)
)
# The subjobs a start may send: CREATED, no parent left, not sent yet; taken in the same
# statement (``dispatched_at``), so two argo.advance running at once send each one once.
CLAIM_READY = (
    update(_SUB)
    .where(
        _SUB.c.argo_job_id == bindparam("argo"),
        _SUB.c.state == "CREATED",
        _SUB.c.parents_left == 0,
        _SUB.c.dispatched_at.is_(None),
    )
    .values(dispatched_at=bindparam("now"))
    .returning(_SUB.c.id, _SUB.c.site, _SUB.c.argo_job_id, _SUB.c.sites)
)
UNCLAIM = (
    update(_SUB)
    .where(_SUB.c.id.in_(bindparam("ids", expanding=True)), _SUB.c.state == "CREATED")
    .values(dispatched_at=None)
)


def failed_names(argo_id: int, limit: int = 10) -> Any:
    """The names of (at most ``limit`` of) the job's failed subjobs, for the reason a failed
    graph job gives: asked once, when it ends."""
    return (
        select(_SUB.c.name)
        .where(_SUB.c.argo_job_id == argo_id, _SUB.c.state.like("%" + states.FAILED_SUFFIX))
        .order_by(_SUB.c.position)
        .limit(limit)
    )


def descendants_query(subjob_id: int) -> Any:
    """Every subjob below ``subjob_id`` (its children, theirs, ...), with its depth (1 for a
    child): one recursive query over the edges."""
    below = (
        select(EDGES.c.child_id.label("id"), literal(1).label("depth"))
        .where(EDGES.c.parent_id == subjob_id)
        .cte("below", recursive=True)
    )
    below = below.union(
        select(EDGES.c.child_id, below.c.depth + 1).where(EDGES.c.parent_id == below.c.id)
    )
    return (
        select(below.c.id, func.min(below.c.depth).label("depth"))
        .group_by(below.c.id)
        .order_by(func.min(below.c.depth), below.c.id)
    )


def parents_of(conn: Any, argo_id: int) -> dict[int, list[int]]:
    """Each subjob of the job with its parents' ids (for showing a job)."""
    rows = conn.execute(
        select(EDGES.c.child_id, EDGES.c.parent_id)
        .where(EDGES.c.argo_job_id == argo_id)
        .order_by(EDGES.c.child_id, EDGES.c.parent_id)
    )
    out: dict[int, list[int]] = {}
    for child, parent in rows:
        out.setdefault(child, []).append(parent)
    return out


def parent_outputs(conn: Any, subjob_id: int) -> list[tuple[str, str | None]]:
    """A subjob's parents' names and output URLs, for a join's stage in: each parent's
    output goes to a sub-folder named after the parent."""
    rows = conn.execute(
        select(_SUB.c.name, _SUB.c.output_url)
        .select_from(EDGES.join(_SUB, _SUB.c.id == EDGES.c.parent_id))
        .where(EDGES.c.child_id == subjob_id)
        .order_by(_SUB.c.position)
    )
    return [(name, url) for name, url in rows]


def edge_rows(argo_id: int, ids: dict[str, int], subjobs: Sequence[Named]) -> list[dict]:
    return [
        {"argo_job_id": argo_id, "child_id": ids[sj.name], "parent_id": ids[parent]}
        for sj in subjobs
        for parent in dict.fromkeys(sj.parents or [])
    ]


def default_urls(
    subjobs: Sequence[Any], staged_input: str | None, output_for: Any, outputs: dict[str, str]
) -> list[tuple[str | None, str]]:
    """Each new subjob's (input, output) URLs where its message names none: a root reads the
    Argo job's staged input (if any); a child of one parent reads that parent's output, as a
    linear job's next subjob does; a join reads nothing by URL (its stage in fetches each
    parent's output into a sub-folder named after the parent). ``outputs`` has the output of
    every subjob already stored, by name; ``output_for(i)`` names a new subjob's default."""
    outputs = dict(outputs)
    chosen = []
    for i, sj in enumerate(subjobs):
        output = sj.output_url or output_for(i)
        outputs[sj.name] = output
        chosen.append(output)
    out = []
    for sj, output in zip(subjobs, chosen, strict=True):
        parents = list(dict.fromkeys(sj.parents or []))
        if sj.input_url:
            given: str | None = sj.input_url
        elif not parents:
            given = staged_input
        elif len(parents) == 1:
            given = outputs[parents[0]]
        else:
            given = None
        out.append((given, output))
    return out


def add_subjobs(
    tx: StateWriter,
    argo_id: int,
    messages: Sequence[Any],
    prefix: str = "children",
) -> list[int]:
    """Add checked subjob messages (``BalsamJobMessage``) to the stored graph job
    ``argo_id`` inside ``tx``: their parents may name the job's subjobs and each other. Their
    rows (CREATED, counting their unfinished parents), edges and CREATED events; the job's
    open count raised. Returns their ids; ``ValidationFailed`` names the field of each
    problem and nothing is stored. The caller sends what ``next_step`` owes after the commit
    (``argo.advance`` sends every ready subjob)."""

    conn = tx.conn
    argo = conn.execute(
        select(_ARGO.c.graph, _ARGO.c.state, _ARGO.c.name, _ARGO.c.job_status_routing_key)
        .where(_ARGO.c.id == argo_id)
        .with_for_update()
    ).first()
    if argo is None:
        raise InvalidState(f"no argo job {argo_id}")
    if not argo.graph:
        raise InvalidState(f"argo job {argo_id} is linear: subjobs are added to graph jobs only")
    rows = conn.execute(
        select(_SUB.c.id, _SUB.c.name, _SUB.c.state, _SUB.c.output_url, _SUB.c.position)
        .where(_SUB.c.argo_job_id == argo_id)
        .order_by(_SUB.c.position)
        .with_for_update()
    ).all()
    errors = problems(messages, max_subjobs(), [r.name for r in rows], prefix)
    if errors:
        raise ValidationFailed(errors)
    staging = get_settings().argo.staging_url_for
    base = max((r.position for r in rows), default=-1) + 1
    urls = default_urls(
        messages,
        None,
        lambda i: staging(str(argo_id), f"sub{base + i}"),
        {r.name: r.output_url for r in rows},
    )
    finished = {r.name for r in rows if r.state == "JOB_FINISHED"}
    now = utcnow()
    new_rows = [
        {
            **{f: getattr(sj, f) for f in MESSAGE_FIELDS},
            "argo_job_id": argo_id,
            "position": base + i,
            "input_url": given,
            "output_url": output,
            "parents_left": len({p for p in sj.parents or [] if p not in finished}),
            "created_at": now,
            "updated_at": now,
        }
        for i, (sj, (given, output)) in enumerate(zip(messages, urls, strict=True))
    ]
    if not new_rows:
        return []
    new_ids = list(
        conn.execute(
            insert(_SUB).returning(_SUB.c.id, sort_by_parameter_order=True), new_rows
        ).scalars()
    )
    ids = {r.name: r.id for r in rows} | {
        sj.name: ident for sj, ident in zip(messages, new_ids, strict=True)
    }
    edges = edge_rows(argo_id, ids, messages)
    if edges:
        conn.execute(insert(EDGES), edges)
    conn.execute(
        update(_ARGO)
        .where(_ARGO.c.id == argo_id)
        .values(
            open_subjobs=_ARGO.c.open_subjobs + len(new_ids),
            num_subjobs=_ARGO.c.num_subjobs + len(new_ids),
        )
    )
    key = argo.job_status_routing_key
    tx.created(
        [
            (argo_id, ident, (key, sj.name, sj.site))
            for sj, ident in zip(messages, new_ids, strict=True)
        ]
    )
    return new_ids
