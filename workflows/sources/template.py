"""Job-message templates: a JSON document whose strings may name columns of a row.

A string that is exactly ``"{column}"`` becomes the column's value as JSON (a number stays a
number, NULL becomes null); a placeholder inside a longer string is replaced by the value's
text (``"shot-{shot}"`` -> ``"shot-171234"``). ``{{`` and ``}}`` stand for braces. The template
is parsed into a structure before any row is seen and values are put into that structure,
never into text that is parsed again, so nothing in a row can add a field, close a string or
reach a command line. Pure: no I/O.
"""

from __future__ import annotations

import datetime
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from edgeceleryapp.errors import ValidationFailed

# ``{{``, ``}}``, a placeholder, or a brace that is neither (refused).
_TOKEN = re.compile(r"\{\{|\}\}|\{([A-Za-z_][A-Za-z0-9_]*)\}|[{}]")


class TemplateError(ValueError):
    """The template itself is wrong (a settings problem, found when the settings load)."""


@dataclass(frozen=True)
class Template:
    """A parsed template and the columns it names."""

    document: Any
    columns: frozenset[str]


def _path(parent: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{parent}[{key}]"
    return f"{parent}.{key}" if parent else key


def _walk(node: Any, path: str = "") -> list[tuple[str, str]]:
    """Every (path, string) of a JSON document, the strings that may hold placeholders."""
    if isinstance(node, str):
        return [(path, node)]
    if isinstance(node, dict):
        return [found for k, v in node.items() for found in _walk(v, _path(path, k))]
    if isinstance(node, list):
        return [found for i, v in enumerate(node) for found in _walk(v, _path(path, i))]
    return []


def _columns(path: str, text: str) -> list[str]:
    names = []
    for match in _TOKEN.finditer(text):
        if match.group(0) in ("{", "}"):
            raise TemplateError(
                f"template {path or '(top)'}: a lone {match.group(0)!r} in {text!r} (write "
                "{{ or }} for a brace, {column} for a column)"
            )
        if match.group(1):
            names.append(match.group(1))
    return names


def parse(text: str) -> Template:
    """The template of ``text`` (JSON), or a ``TemplateError`` saying what is wrong."""
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise TemplateError(f"template: not JSON: {exc}") from None
    if not isinstance(document, dict):
        raise TemplateError("template: must be a JSON object (an Argo job message)")
    columns = {name for path, value in _walk(document) for name in _columns(path, value)}
    return Template(document, frozenset(columns))


def json_value(value: Any) -> Any:
    """A column's value as JSON has it; ``TypeError`` for one it cannot hold (bytes...)."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, datetime.date | datetime.time):
        return value.isoformat()
    raise TypeError(f"a {type(value).__name__} cannot be put in a job message")


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def render(template: Template, row: Mapping[str, Any]) -> Any:
    """The job message for ``row``; ``ValidationFailed`` naming each template field whose
    column the row lacks or holds a value JSON cannot carry."""
    errors: list[tuple[str, str]] = []
    values: dict[str, Any] = {}
    for name in sorted(template.columns):
        if name not in row:
            errors.append((f"template {{{name}}}", f"no column {name!r} in the row"))
            continue
        try:
            values[name] = json_value(row[name])
        except TypeError as exc:
            errors.append((f"column {name}", str(exc)))
    if errors:
        raise ValidationFailed(errors)

    def fill(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: fill(v) for k, v in node.items()}
        if isinstance(node, list):
            return [fill(v) for v in node]
        if not isinstance(node, str):
            return node
        whole = _TOKEN.fullmatch(node)
        if whole and whole.group(1):
            return values[whole.group(1)]
        return _TOKEN.sub(
            lambda m: _text(values[m.group(1)]) if m.group(1) else m.group(0)[0], node
        )

    return fill(template.document)
