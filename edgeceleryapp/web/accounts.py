"""Who may use the job browser: the users and editors of the settings file, as it is now.

The running browser looks at the file's identity (inode, size, modification time) on each
request and reads it again when it changed, so a password set with ``edgecelery web passwd``,
or a user removed by hand, takes effect without a restart; sessions opened with the old
password end with it (``web.sessions``). A file that no longer loads is reported and the users
loaded before are kept. Only users and editors are taken from a new reading; the address, the
cookie secret and the limits stay as the server started with.

``set_password`` writes one user's hash into the file and changes nothing else in it, byte for
byte; it refuses, and says what to do by hand, when it cannot be sure of that.
"""

from __future__ import annotations

import json
import logging
import os
import re
import tomllib
from pathlib import Path
from typing import Any

from edgeceleryapp.errors import ConfigurationError
from edgeceleryapp.settings import WebSettings, apply_env, load_settings

log = logging.getLogger(__name__)

_USERS_HEADER = re.compile(r"^\s*\[\s*web\s*\.\s*users\s*\]\s*(#.*)?$")
_ANY_HEADER = re.compile(r"^\s*\[")
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def _identity(path: Path | None) -> tuple[int, int, int] | None:
    if path is None:
        return None
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)


class Accounts:
    """The browser's users (name -> password hash) and editors, re-read when the file changes.
    Used from the server's event loop only."""

    def __init__(self, web: WebSettings, path: Path | None):
        self._path = path
        self._seen = _identity(path)
        self._users = dict(web.users)
        self._editors = frozenset(web.editors)

    def _refresh(self) -> None:
        now = _identity(self._path)
        if now == self._seen:
            return
        self._seen = now
        try:
            web = load_settings(self._path).web
        except ConfigurationError as exc:
            log.warning("settings not read again, the users stay as they were: %s", exc)
            return
        if not web.users:
            log.warning("%s: [web.users] is empty now; the users stay as they were", self._path)
            return
        self._users, self._editors = dict(web.users), frozenset(web.editors)

    @property
    def users(self) -> dict[str, str]:
        """Names and password hashes; a new dict after each change, never changed in place."""
        self._refresh()
        return self._users

    @property
    def editors(self) -> frozenset[str]:
        self._refresh()
        return self._editors


def _key_pattern(user: str) -> re.Pattern[str]:
    names = [re.escape(json.dumps(user)), re.escape(f"'{user}'")]
    if _BARE_KEY.fullmatch(user):
        names.append(re.escape(user))
    return re.compile(rf"^(\s*)(?:{'|'.join(names)})\s*=")


def with_password(text: str, user: str, hashed: str) -> str:
    """The settings text with ``user``'s line in ``[web.users]`` set to ``hashed``; every other
    byte as it was. ConfigurationError if the user has no such line (an inline table, a dotted
    key elsewhere) or the result would read differently in anything but that value."""
    lines = text.splitlines(keepends=True)
    start = next((i for i, line in enumerate(lines) if _USERS_HEADER.match(line)), None)
    if start is None:
        raise ConfigurationError("web.users: no [web.users] table in the settings file")
    pattern = _key_pattern(user)
    for i in range(start + 1, len(lines)):
        if _ANY_HEADER.match(lines[i]):
            break
        match = pattern.match(lines[i])
        if match:
            ending = "\n" if lines[i].endswith("\n") else ""
            key = user if _BARE_KEY.fullmatch(user) else json.dumps(user)
            lines[i] = f'{match.group(1)}{key} = "{hashed}"{ending}'
            break
    else:
        raise ConfigurationError(f"web.users.{user}: no line for this user in [web.users]")
    changed = "".join(lines)
    try:
        before, after = _users_apart(text, user), _users_apart(changed, user)
    except tomllib.TOMLDecodeError:
        before = after = (None, {})
    if after[0] != hashed or before[1] != after[1]:
        raise ConfigurationError(f"web.users.{user}: the line for this user is not a plain one")
    return changed


def _users_apart(text: str, user: str) -> tuple[Any, dict[str, Any]]:
    """``user``'s hash, and the rest of the settings without it."""
    data = tomllib.loads(text)
    users = data.get("web", {}).get("users", {})
    return users.pop(user, None), data


def set_password(path: Path, user: str, hashed: str) -> None:
    """Write ``hashed`` as ``user``'s password hash into the settings file at ``path``,
    atomically (a reader sees the old file or the new one), keeping its owner and mode."""
    path = path.resolve()
    text = path.read_text()
    if user not in tomllib.loads(text).get("web", {}).get("users", {}):
        raise ConfigurationError(
            f"web.users.{user}: no such user in {path}; add one with a hash from "
            "`edgecelery web hash-password`"
        )
    changed = with_password(text, user, hashed)
    effective = apply_env(tomllib.loads(changed), dict(os.environ))
    if effective.get("web", {}).get("users", {}).get(user) != hashed:
        raise ConfigurationError(
            f"web.users.{user}: set by an EDGECELERY_ variable, which overrides the file"
        )
    st = path.stat()
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        temporary.write_text(changed)
        os.chmod(temporary, st.st_mode & 0o7777)
        if os.geteuid() == 0:
            os.chown(temporary, st.st_uid, st.st_gid)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
