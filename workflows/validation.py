"""Turn message text into a validated message, or one error listing every bad field."""

from __future__ import annotations

import json
from typing import Any, TypeVar

import json5
from pydantic import BaseModel, ValidationError

from edgeceleryapp.errors import ValidationFailed
from workflows.schemas import ArgoJobMessage, BalsamJobMessage

M = TypeVar("M", bound=BaseModel)


def parse_json(text: str | bytes) -> Any:
    """Strict JSON first (fast); then JSON5, which reads seed 001's trailing commas as written."""
    try:
        return json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError):
        pass
    try:
        return json5.loads(text.decode() if isinstance(text, bytes) else text)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValidationFailed([("message", f"not valid JSON: {exc}")]) from None


def field_path(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "message"


def _problem(error: dict[str, Any]) -> str:
    kind = error["type"]
    if kind == "extra_forbidden":
        return "unknown field"
    if kind == "missing":
        return "is required"
    if kind == "string_pattern_mismatch":
        return f"has characters or a form that is not allowed ({error['input']!r})"
    message = str(error["msg"])
    return message.removeprefix("Value error, ")


def validate(model: type[M], data: Any) -> M:
    if not isinstance(data, dict):
        raise ValidationFailed([("message", "must be a JSON object")])
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ValidationFailed(
            [(field_path(tuple(e["loc"])), _problem(e)) for e in exc.errors()]
        ) from None


def validate_argo(data: Any) -> ArgoJobMessage:
    return validate(ArgoJobMessage, data)


def validate_balsam(data: Any) -> BalsamJobMessage:
    return validate(BalsamJobMessage, data)
