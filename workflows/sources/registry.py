"""Which class serves each kind of job source, as lazy ``"module:Class"`` strings (as
``backends/registry.py`` does for schedulers): the argo worker imports a source's module only
when the settings name that kind. The settings check ``kind`` against these names."""

from __future__ import annotations

from typing import TYPE_CHECKING

from backends import registry as plugins

if TYPE_CHECKING:
    from workflows.sources.base import JobSource

SOURCES: dict[str, str] = {
    "sql": "workflows.sources.sql:SQLSource",
    "directory": "workflows.sources.directory:DirectorySource",
}


def source_class(kind: str) -> type[JobSource]:
    """The class serving ``kind``, imported now."""
    from workflows.sources.base import JobSource

    return plugins.load("sources.kind", kind, SOURCES, JobSource)
