"""Passwords for the job browser: PBKDF2-SHA256 hashes kept in the settings, never passwords.

The hash names its own iteration count, so a settings file can carry hashes of different
strengths and raising the default later does not invalidate existing ones.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import secrets

SCHEME = "pbkdf2_sha256"
ITERATIONS = 600_000  # OWASP's 2023 figure for PBKDF2-HMAC-SHA256


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode().rstrip("=")


def hash_password(password: str, iterations: int = ITERATIONS) -> str:
    """``pbkdf2_sha256$<iterations>$<salt>$<hash>`` for the settings file."""
    salt = secrets.token_bytes(16)
    digest = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    return f"{SCHEME}${iterations}${_b64(salt)}${_b64(digest)}"


def verify_password(password: str, stored: str) -> bool:
    """True if ``password`` matches ``stored``; a malformed hash never matches."""
    try:
        scheme, iterations, salt, digest = stored.split("$")
        rounds = int(iterations)
        raw_salt = base64.b64decode(salt + "=" * (-len(salt) % 4))
    except ValueError:
        return False
    if scheme != SCHEME or rounds < 1:
        return False
    computed = hashlib.pbkdf2_hmac("sha256", password.encode(), raw_salt, rounds)
    return hmac.compare_digest(_b64(computed), digest)


@functools.cache
def _decoy_hash() -> str:
    return hash_password("decoy")


def check_password(password: str, stored: str | None) -> bool:
    """True if ``password`` matches ``stored``; for a user that does not exist (``None``) a
    decoy hash is checked instead, so a wrong name costs the same time as a wrong password and
    the answer's delay does not tell which names exist."""
    matched = verify_password(password, stored or _decoy_hash())
    return matched and stored is not None
