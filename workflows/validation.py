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


def site_fields(subjob: dict[str, Any], prefix: str = "") -> list[tuple[str, str]]:
    """A subjob names one ``site`` or a list of candidate ``sites`` (each once), not both and
    not neither. Whether each is configured is intake's to say (``workflows.intake``)."""
    has_site, sites = "site" in subjob, subjob.get("sites")
    if has_site and "sites" in subjob:
        return [(f"{prefix}sites", "give either site or sites (candidate sites), not both")]
    if not has_site and "sites" not in subjob:
        return [(f"{prefix}site", "is required (or name candidate sites in sites)")]
    if not isinstance(sites, list):
        return []
    errors = []
    for i, name in enumerate(sites):
        if isinstance(name, str) and name in sites[:i]:
            errors.append((f"{prefix}sites[{i}]", f"{name!r} is named twice"))
    return errors


def _site_errors(model: type[BaseModel], data: dict[str, Any]) -> list[tuple[str, str]]:
    if model is BalsamJobMessage:
        return site_fields(data)
    subjobs = data.get("subjobs") if model is ArgoJobMessage else None
    if not isinstance(subjobs, list):
        return []
    errors = []
    for i, subjob in enumerate(subjobs):
        if isinstance(subjob, dict):
            errors += site_fields(subjob, f"subjobs[{i}].")
    return errors


def validate(model: type[M], data: Any) -> M:
    if not isinstance(data, dict):
        raise ValidationFailed([("message", "must be a JSON object")])
    errors = _site_errors(model, data)
    try:
        message = model.model_validate(data)
    except ValidationError as exc:
        found = [(field_path(tuple(e["loc"])), _problem(model, e)) for e in exc.errors()]
        raise ValidationFailed(found + errors) from None
    if errors:
        raise ValidationFailed(errors)
    return message


def validate_argo(data: Any) -> ArgoJobMessage:
    return validate(ArgoJobMessage, data)


def validate_balsam(data: Any) -> BalsamJobMessage:
    return validate(BalsamJobMessage, data)
