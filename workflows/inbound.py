"""Every message from outside (the intake queue, status messages for mail) is hostile until it
passes ``screen``: its content type, size, ``message_id`` and nesting depth are checked, and it
is decoded, before any database work. A message that fails is refused with every problem
named, never raised out of a consumer: one undecodable message used to stop the argo worker,
and every restart died of it again.

The consumers read raw messages (kombu's ``on_message``), so decoding is ours: kombu's would
raise on a content type it does not accept, on invalid JSON and on deep nesting.
"""

from __future__ import annotations

import bz2
import logging
import lzma
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kombu import compression
from kombu.exceptions import OperationalError as BrokerError
from sqlalchemy.exc import OperationalError as DatabaseAway
from sqlalchemy.exc import TimeoutError as PoolTimeout

from edgeceleryapp import dead_letters
from edgeceleryapp.errors import TransientError, ValidationFailed
from edgeceleryapp.settings import get_settings
from workflows.validation import parse_json

log = logging.getLogger(__name__)

CONTENT_TYPE = "application/json"
# A job message is four levels deep (job, subjobs, subjob, value); nothing honest needs 32.
MAX_DEPTH = 32
# The ids of jobs are kept in a 256-character column (models.ArgoJob.intake_key).
MESSAGE_ID_MAX = 255
# The ids of jobs that job sources made (``workflows.sources.base.source_key``): reserved, so
# that no message on the intake queue can stand in for a source's row or file.
SOURCE_KEY_PREFIX = "source:"


@dataclass(frozen=True)
class Received:
    """A message as it came off the queue, nothing of it trusted yet."""

    body: bytes
    content_type: str
    message_id: Any  # whatever the producer put there: a string, a list, a number, nothing

    @classmethod
    def of(cls, message: Any) -> Received:
        body = message.body
        if body is None:
            body = b""
        elif isinstance(body, str):
            body = body.encode("utf-8", "surrogateescape")
        return cls(
            bytes(body),
            str(message.content_type or ""),
            (message.properties or {}).get("message_id"),
        )


@dataclass(frozen=True)
class Screened:
    """A message that passed: its decoded data and its usable message id."""

    data: Any
    message_id: str | None
    received: Received


def _bounded(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def message_id_problem(message_id: Any) -> str | None:
    if message_id is None:
        return None
    if not isinstance(message_id, str):
        return f"must be a string, not {type(message_id).__name__} {_bounded(message_id)}"
    if not 0 < len(message_id) <= MESSAGE_ID_MAX:
        return f"must be 1 to {MESSAGE_ID_MAX} characters long, not {len(message_id)}"
    if not message_id.isprintable():
        return "must hold printable characters only"
    if message_id.startswith(SOURCE_KEY_PREFIX):
        return f"must not begin with {SOURCE_KEY_PREFIX!r} (reserved for job sources)"
    return None


def usable_id(message_id: Any) -> str | None:
    """The id if it passes, else None (the refusal names what was wrong with it)."""
    return message_id if message_id_problem(message_id) is None else None


def nesting_depth(value: Any, limit: int) -> int:
    """How deep arrays and objects nest in ``value``, counted up to ``limit + 1`` (no
    recursion: the value may be as deep as the decoder allowed)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if not isinstance(node, dict | list):
            continue
        deepest = max(deepest, depth)
        if deepest > limit:
            return deepest
        children = node.values() if isinstance(node, dict) else node
        stack.extend((child, depth + 1) for child in children)
    return deepest


# kombu's compression codecs we can read a bounded amount of; any other is refused.
_STREAMING_DECOMPRESSORS: dict[str, Callable[[], Any]] = {
    "application/x-gzip": zlib.decompressobj,
    "application/x-bz2": bz2.BZ2Decompressor,
    "application/x-lzma": lzma.LZMADecompressor,
}


def _capped_decoder(factory: Callable[[], Any] | None, limit: int) -> Callable[[bytes], bytes]:
    def decompress(body: bytes) -> bytes:
        if factory is None:
            raise ValueError("compression not accepted here")
        out = factory().decompress(body, max_length=limit + 1)
        if len(out) > limit:
            raise ValueError(f"decompresses to more than message_max_bytes ({limit})")
        return out

    return decompress


def bound_decompression(limit: int) -> None:
    """Make every compression codec kombu knows stop at ``limit`` bytes, in this process.

    kombu decompresses a message that carries a ``compression`` header when it builds it,
    before a consumer sees it: a few kilobytes could expand to gigabytes in the worker. The
    consumers call this at start; a message that would expand further fails to decode and
    is set aside as a dead letter like any other undecodable one. Our own task messages are
    never compressed."""
    for content_type in compression.encoders():
        encoder, _ = compression.get_encoder(content_type)
        decoder = _capped_decoder(_STREAMING_DECOMPRESSORS.get(content_type), limit)
        compression.register(encoder, decoder, content_type)


def _decode(body: bytes) -> Any:
    """The JSON value; a string value is the message as text (a producer that encoded it
    twice), read once more. Either way the size was checked first."""
    data = parse_json(body)
    if isinstance(data, str):
        data = parse_json(data)
    if nesting_depth(data, MAX_DEPTH) > MAX_DEPTH:
        raise ValidationFailed([("message", f"is nested more than {MAX_DEPTH} levels deep")])
    return data


def screen(received: Received) -> Screened:
    """The message decoded, or ``ValidationFailed`` naming every problem. Cheap checks first:
    nothing is decoded that is too large or not JSON."""
    errors = []
    if problem := message_id_problem(received.message_id):
        errors.append(("message_id", problem))
    media_type = received.content_type.split(";", 1)[0].strip().lower()
    if media_type != CONTENT_TYPE:
        errors.append(
            ("content_type", f"must be {CONTENT_TYPE}, not {_bounded(received.content_type)}")
        )
    limit = get_settings().message_max_bytes
    if len(received.body) > limit:
        errors.append(
            (
                "message",
                f"is {len(received.body)} bytes, more than message_max_bytes ({limit})",
            )
        )
    if errors:
        raise ValidationFailed(errors)
    return Screened(_decode(received.body), received.message_id, received)


def is_transient(exc: BaseException) -> bool:
    """Whether ``exc`` says the database or broker is away (the message should come back
    later) rather than that something about the message is wrong."""
    return isinstance(exc, TransientError | DatabaseAway | PoolTimeout | BrokerError | OSError)


def describe(exc: BaseException) -> str:
    """An exception in one bounded line (a database error's text carries its statement)."""
    text = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:300] if text else ''}".rstrip(": ")


def set_aside(message: Any, letter: dead_letters.Letter) -> None:
    """Keep a refused message as a dead letter and acknowledge it. If the database is away it
    goes back on the queue; if even the letter cannot be stored it is dropped, loudly, rather
    than block the queue."""
    try:
        dead_letters.set_aside([letter])
    except Exception as exc:
        if is_transient(exc):
            log.warning(
                "%s: cannot set a message aside now (%s); back on the queue", letter.source, exc
            )
            message.requeue()
            return
        log.exception(
            "%s: message %s dropped: refused (%s) and could not be set aside",
            letter.source,
            letter.message_id,
            dead_letters.reason(letter.errors),
        )
        message.reject()
        return
    message.ack()
