"""Spawning subjobs from a postprocess script, in the manner of Balsam's ``dag`` module.

A postprocess (and the application before it) runs with ``$EDGECELERY_WORKDIR`` set to the
subjob's work directory. ``spawn_child`` and ``add_dependency`` write the children into
``children.json`` there; after the postprocess succeeds the service checks them like any job
message and adds them to the Argo job (``workflows/children.py``), once.

Standard library only and no import of the rest of the service: a compute or login node with
nothing but Python runs it (copy this one file next to the script if edgecelery is not
installed there). Every write goes to a temporary file renamed over ``children.json``, so a
script killed half way leaves the previous list whole.

Both calls are idempotent: spawning a name already in the file replaces that child, and a
dependency already there is not added twice. A postprocess that runs again (its worker died
before the step was recorded) writes the same list, not a second set of children.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

CHILDREN_FILE = "children.json"
# The spawning subjob's name, set for its postprocess: a child that names no parents
# depends on it, and ``add_dependency`` keeps that dependency when it adds another.
SUBJOB_NAME_VARIABLE = "EDGECELERY_SUBJOB_NAME"


def children_path(workdir: str | os.PathLike[str] | None = None) -> Path:
    """Where the children go: ``workdir``, else ``$EDGECELERY_WORKDIR``."""
    where = workdir if workdir is not None else os.environ.get("EDGECELERY_WORKDIR")
    if not where:
        raise RuntimeError(
            "EDGECELERY_WORKDIR is not set: spawn children from a subjob's postprocess "
            "(or pass workdir=)"
        )
    return Path(where) / CHILDREN_FILE


def children(workdir: str | os.PathLike[str] | None = None) -> list[dict[str, Any]]:
    """The children spawned so far (an empty list before the first)."""
    path = children_path(workdir)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return []
    if not isinstance(data, list):
        raise ValueError(f"{path} holds no JSON list; remove it or fix it")
    return data


def _write(path: Path, items: list[dict[str, Any]]) -> None:
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=".children.", suffix=".part")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(items, fh, indent=1)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def spawn_child(
    name: str,
    site: str,
    application: str,
    parents: list[str] | None = None,
    workdir: str | os.PathLike[str] | None = None,
    **fields: Any,
) -> dict[str, Any]:
    """Add a subjob to the Argo job after this postprocess: ``name`` (unique in the job),
    the ``site`` it runs at and its ``application`` (registered there), and any other field
    of a subjob message (``config_file``, ``num_nodes``, ``input_url``, ...). Without
    ``parents`` it runs after the spawning subjob, with that subjob's output as its input;
    ``parents`` names the subjobs (existing ones, or other children) it waits for instead.
    Returns the child's message as written."""
    child: dict[str, Any] = {"name": name, "site": site, "application": application, **fields}
    if parents is not None:
        child["parents"] = list(parents)
    path = children_path(workdir)
    items = [c for c in children(workdir) if not (isinstance(c, dict) and c.get("name") == name)]
    _write(path, [*items, child])
    return child


def add_dependency(
    parent: str, child: str, workdir: str | os.PathLike[str] | None = None
) -> dict[str, Any]:
    """Make the spawned child ``child`` wait for ``parent`` too (a subjob of the job or
    another child). A child spawned without parents keeps waiting for the spawning subjob.
    Returns the child's message as written."""
    path = children_path(workdir)
    items = children(workdir)
    for item in items:
        if isinstance(item, dict) and item.get("name") == child:
            break
    else:
        raise ValueError(
            f"no child named {child!r} was spawned; spawn_child it first (only children "
            "take new dependencies)"
        )
    if "parents" not in item:
        spawner = os.environ.get(SUBJOB_NAME_VARIABLE)
        if not spawner:
            raise RuntimeError(
                f"{SUBJOB_NAME_VARIABLE} is not set: call add_dependency from a postprocess, "
                "or give the child its parents when spawning it"
            )
        item["parents"] = [spawner]
    if parent not in item["parents"]:
        item["parents"].append(parent)
    _write(path, items)
    return item
