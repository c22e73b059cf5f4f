"""Where the browser may send a user after logging in: a path on this site, nothing else.

The target comes from the ``next`` argument, which anyone can put in a link, so a lax check
is an open redirect: a login page on our host that lands the user on a look-alike elsewhere.
Browsers are generous readers of URLs: they treat ``\\`` as ``/`` (``/\\evil.example`` is
``//evil.example``, another host), drop tabs and newlines (``/<TAB>/evil.example``), and a
proxy or a second decoding may turn ``%5C`` or ``%2F`` into the same. So a target is accepted
only if it, and its percent-decoded form, is a plain absolute path: a single leading ``/``, no
scheme, no host, no backslash, no control character or white space.
"""

from __future__ import annotations

from urllib.parse import unquote, urlsplit

DEFAULT = "/jobs"


def _plain_path(target: str) -> bool:
    if not target.startswith("/") or target.startswith("//"):
        return False
    if "\\" in target or any(ch.isspace() or ord(ch) < 0x20 or ord(ch) == 0x7F for ch in target):
        return False
    parts = urlsplit(target)
    return not parts.scheme and not parts.netloc


def local_target(target: str, default: str = DEFAULT) -> str:
    """``target`` if it is a path on this site, else ``default``."""
    return target if _plain_path(target) and _plain_path(unquote(target)) else default
