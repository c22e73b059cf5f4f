"""Login sessions of the job browser, kept in the database so that they can be ended.

A signed cookie alone stays valid until it expires, whatever the user does: logging out only
asks the browser to forget it, and a copy (a shared machine, a stolen laptop) goes on working.
So the cookie carries a random token, and the session is a row (``models.WebSession``) that
logout deletes; "log out everywhere", ``edgecelery web logout USER`` and
``edgecelery web passwd USER`` delete all of a user's rows. Each row also records which password
hash it was opened with, so a hash changed in the settings by any means ends the sessions of
the old password.

Looking a session up only reads (``read_scope``): a page view never waits for, or takes, the
database's write lock. Opening and ending sessions write, as logging in and out are changes.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Mapping
from datetime import timedelta

from sqlalchemy import delete

from edgeceleryapp.db import read_scope, session_scope
from edgeceleryapp.models import WebSession, utcnow

TOKEN_BYTES = 32


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def password_stamp(stored_hash: str) -> str:
    """What a session remembers of the password hash it was opened with."""
    return _digest("password:" + stored_hash)


def open_session(user: str, stored_hash: str, address: str, hours: float) -> str:
    """A new session for ``user``; returns the token for the cookie. Sessions that have expired
    are deleted on the way, so the table holds only live ones."""
    token = secrets.token_urlsafe(TOKEN_BYTES)
    now = utcnow()
    with session_scope() as s:
        s.execute(delete(WebSession).where(WebSession.expires_at <= now))
        s.add(
            WebSession(
                token_hash=_digest(token),
                user=user,
                password_stamp=password_stamp(stored_hash),
                address=address[:64],
                created_at=now,
                expires_at=now + timedelta(hours=hours),
            )
        )
    return token


def session_user(token: str, users: Mapping[str, str]) -> str | None:
    """The user a token is a live session of: not ended, not expired, and opened with the
    password the user has now. ``users`` maps names to their current password hashes."""
    with read_scope() as s:
        row = s.get(WebSession, _digest(token))
        if row is None or row.expires_at <= utcnow():
            return None
        current = users.get(row.user)
        if current is None or row.password_stamp != password_stamp(current):
            return None
        return row.user


def end_session(token: str) -> None:
    with session_scope() as s:
        s.execute(delete(WebSession).where(WebSession.token_hash == _digest(token)))


def end_sessions(user: str) -> int:
    """End every session of ``user``; returns how many there were."""
    with session_scope() as s:
        result = s.execute(delete(WebSession).where(WebSession.user == user))
        return result.rowcount or 0
