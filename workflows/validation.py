"""Turn message text into a validated message, or one error listing every bad field."""

from __future__ import annotations

import difflib
import json
import re
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from backends.registry import TRANSFERS
from edgeceleryapp.errors import ValidationFailed
from workflows.schemas import URL_PATTERN, ArgoJobMessage, BalsamJobMessage

M = TypeVar("M", bound=BaseModel)


# A string (closed, or running to the end of the text) or a comma before a closing bracket:
# the strings are kept, such commas dropped. Each character is matched once, so the lenient
# reading costs about what strict parsing does, whatever the text.
_STRING_OR_TRAILING_COMMA = re.compile(r'("(?:[^"\\]|\\.)*(?:"|\\?\Z))|,(?=\s*[\]}])', re.S)


def _keep_strings(match: re.Match[str]) -> str:
    return match.group(1) or ""


def parse_json(text: str | bytes) -> Any:
    """Strict JSON; failing that, JSON with trailing commas, as the HUST'17 slides' examples are
    written. Not a general JSON5 reader: json5 took 36 µs a character, so a 400 KB text held
    the intake consumer's thread for seconds."""
    try:
        return json.loads(text)
    except RecursionError:
        raise ValidationFailed([("message", "is nested too deeply")]) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        strict_error = exc
    try:
        decoded = text.decode() if isinstance(text, bytes) else text
        return json.loads(_STRING_OR_TRAILING_COMMA.sub(_keep_strings, decoded))
    except RecursionError:
        raise ValidationFailed([("message", "is nested too deeply")]) from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ValidationFailed([("message", f"not valid JSON: {strict_error}")]) from None


def field_path(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "message"


def _fields_at(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """The field names the model allows where ``loc`` points (a subjob's inside ``subjobs``)."""
    if model is ArgoJobMessage and len(loc) > 2 and loc[0] == "subjobs":
        model = BalsamJobMessage
    return list(model.model_fields)


def _unknown_field(model: type[BaseModel], loc: tuple[Any, ...]) -> str:
    """Named with the nearest known field, since a misspelt key is the usual cause."""
    close = difflib.get_close_matches(str(loc[-1]), _fields_at(model, loc), n=1, cutoff=0.6)
    if not close:
        return "unknown field"
    return f"unknown field; did you mean {close[0]!r}?"


def _pattern_problem(error: dict[str, Any]) -> str:
    if error["ctx"].get("pattern") == URL_PATTERN:
        return (
            f"{error['input']!r} is not a URL: it needs a scheme, one of "
            f"{', '.join(s + '://' for s in TRANSFERS)} (or one a site's settings add), "
            "and no spaces or control characters"
        )
    return f"has characters or a form that is not allowed ({error['input']!r})"


def _problem(model: type[BaseModel], error: dict[str, Any]) -> str:
    kind = error["type"]
    if kind == "extra_forbidden":
        return _unknown_field(model, tuple(error["loc"]))
    if kind == "missing":
        return "is required"
    if kind == "string_pattern_mismatch":
        return _pattern_problem(error)
    message = str(error["msg"])
    return message.removeprefix("Value error, ")


def validate(model: type[M], data: Any) -> M:
    if not isinstance(data, dict):
        raise ValidationFailed([("message", "must be a JSON object")])
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ValidationFailed(
            [(field_path(tuple(e["loc"])), _problem(model, e)) for e in exc.errors()]
        ) from None


def validate_argo(data: Any) -> ArgoJobMessage:
    return validate(ArgoJobMessage, data)


def validate_balsam(data: Any) -> BalsamJobMessage:
    return validate(BalsamJobMessage, data)
