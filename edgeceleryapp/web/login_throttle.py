"""How many logins the browser checks: a token bucket per user name and per client address.

A password check is PBKDF2 at 600,000 rounds, a tenth of a second of a core, on purpose. Without
a limit anyone could guess passwords as fast as the server hashes and, by the same token, keep
its cores busy. Each attempt takes a token from the user name's bucket and from the address's
before the hash runs; an empty bucket is answered at once (429, with when to come back) and
costs no hash. A successful login gives the tokens back, so only failures count against a user:
``attempts`` failures in a row lock the name until the bucket refills, one token every
``window / attempts`` seconds. Unknown names get buckets like known ones, so the answers do not
tell which names exist. Tokens are taken before the check, not after it fails, so a burst of
concurrent guesses is limited too.

Addresses are counted per IPv4 address and per IPv6 /64 (what one host is usually given). Behind
a reverse proxy every request comes from the proxy's address; the per-name limit still holds.
The table is bounded: past ``max_keys`` the least recently used bucket is forgotten.
"""

from __future__ import annotations

import ipaddress
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

MAX_NAME = 256  # longer names are counted by their first MAX_NAME characters


@dataclass
class _Bucket:
    tokens: float
    stamp: float


class _Buckets:
    """Token buckets by key, of one capacity and refill rate."""

    def __init__(self, capacity: int, window: float, max_keys: int):
        self.capacity = capacity
        self.rate = capacity / window
        self.max_keys = max_keys
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    def _get(self, key: str, now: float) -> _Bucket:
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = _Bucket(float(self.capacity), now)
            while len(self._buckets) > self.max_keys:
                self._buckets.popitem(last=False)
        else:
            bucket.tokens = min(self.capacity, bucket.tokens + (now - bucket.stamp) * self.rate)
            bucket.stamp = now
            self._buckets.move_to_end(key)
        return bucket

    def wait(self, key: str, now: float) -> float:
        """Seconds until ``key`` has a token (0: it has one now)."""
        bucket = self._get(key, now)
        return 0.0 if bucket.tokens >= 1 else (1 - bucket.tokens) / self.rate

    def take(self, key: str, now: float) -> None:
        self._get(key, now).tokens -= 1

    def give(self, key: str, now: float, tokens: float) -> None:
        bucket = self._get(key, now)
        bucket.tokens = min(self.capacity, bucket.tokens + tokens)


def address_key(address: str) -> str:
    """An IPv4 address as it is; an IPv6 address as its /64."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


class LoginThrottle:
    """The login limits of one browser process. Thread-safe; the clock is injectable for tests."""

    def __init__(
        self,
        attempts: int,
        attempts_per_address: int,
        window: float,
        *,
        max_keys: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ):
        self._users = _Buckets(attempts, window, max_keys)
        self._addresses = _Buckets(attempts_per_address, window, max_keys)
        self._clock = clock
        self._lock = threading.Lock()

    def begin(self, user: str, address: str) -> int:
        """Take a token for an attempt; returns 0 if the password may be checked, else the
        whole seconds to wait (for ``Retry-After``), having taken nothing."""
        user, address = user[:MAX_NAME], address_key(address)
        with self._lock:
            now = self._clock()
            wait = max(self._users.wait(user, now), self._addresses.wait(address, now))
            if wait > 0:
                return max(1, math.ceil(wait))
            self._users.take(user, now)
            self._addresses.take(address, now)
            return 0

    def succeeded(self, user: str, address: str) -> None:
        """A right password: the name's failures are forgiven, and the address gets back the
        token this attempt took."""
        user, address = user[:MAX_NAME], address_key(address)
        with self._lock:
            now = self._clock()
            self._users.give(user, now, self._users.capacity)
            self._addresses.give(address, now, 1)
