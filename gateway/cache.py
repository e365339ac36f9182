"""The in-process validation cache: bounded, expiring, keyed by a keyed hash of the cookie.

The raw cookie value is never a key: a heap dump or a debug print of the cache shows only digests
that cannot be replayed.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

V = TypeVar("V")
K = TypeVar("K")


class CookieHasher:
    """A keyed hex digest of a cookie value.

    With the configured shared secret it is HMAC-SHA256, the same on every replica (an operator
    can revoke by digest); without one, keyed BLAKE2b under a random per-process key.
    """

    def __init__(self, key: bytes | None = None) -> None:
        self._shared = bool(key)
        self._key = key if key else secrets.token_bytes(32)

    @classmethod
    def from_secret(cls, secret: str | None) -> CookieHasher:
        """The hasher for auth.cache.secret: shared when it is set, per-process when not."""
        return cls(secret.encode() if secret else None)

    @property
    def shared(self) -> bool:
        """True when every process with the same secret makes the same digest."""
        return self._shared

    def __call__(self, value: str) -> str:
        data = value.encode("utf-8", "surrogatepass")
        if self._shared:
            return hmac.digest(self._key, data, "sha256").hex()
        # A per-process key never leaves the process, so the cheaper keyed BLAKE2b does.
        return hashlib.blake2b(data, key=self._key, digest_size=32).hexdigest()


class TTLCache(Generic[K, V]):
    """An LRU map whose entries expire; expired entries are dropped when touched.

    An entry may be kept `keep` seconds past its expiry: `get` no longer returns it, `stale` still
    does (a session served when the auth API errs). Kept entries count towards the bound.
    """

    def __init__(self, max_entries: int, clock: Callable[[], float] = time.monotonic) -> None:
        self._max = max_entries
        self._clock = clock
        # key -> (expires at, kept until, value)
        self._data: OrderedDict[K, tuple[float, float, V]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._data)

    def get(self, key: K, now: float | None = None) -> V | None:
        """The value until it expires; `now` spares a second clock reading to a caller that has
        one."""
        entry = self._data.get(key)
        if entry is None:
            return None
        if now is None:
            now = self._clock()
        if entry[0] <= now:
            if entry[1] <= now:
                del self._data[key]
            return None
        self._data.move_to_end(key)
        return entry[2]

    def stale(self, key: K) -> V | None:
        """The value while it is fresh or kept past its expiry."""
        entry = self._data.get(key)
        if entry is None:
            return None
        if entry[1] <= self._clock():
            del self._data[key]
            return None
        return entry[2]

    def put(self, key: K, value: V, ttl: float, keep: float = 0.0) -> None:
        expires = self._clock() + ttl
        self._data[key] = (expires, expires + keep, value)
        self._data.move_to_end(key)
        while len(self._data) > self._max:
            self._data.popitem(last=False)

    def discard(self, key: K) -> bool:
        return self._data.pop(key, None) is not None

    def clear(self) -> None:
        self._data.clear()


class SingleFlight(Generic[K, V]):
    """Concurrent callers with the same key share one call.

    The call runs in its own task, so a caller that goes away (a client that disconnects) does not
    cancel it for the others.
    """

    def __init__(self) -> None:
        self._inflight: dict[K, asyncio.Future[V]] = {}

    def __len__(self) -> int:
        return len(self._inflight)

    def __contains__(self, key: K) -> bool:
        return key in self._inflight

    def start(self, key: K, call: Callable[[], Awaitable[V]]) -> asyncio.Future[V]:
        """The call in flight for the key, or `call()` started now."""
        future = self._inflight.get(key)
        if future is None:
            future = asyncio.ensure_future(call())
            self._inflight[key] = future
            future.add_done_callback(lambda f: self._finished(key, f))
        return future

    async def run(self, key: K, call: Callable[[], Awaitable[V]]) -> V:
        return await asyncio.shield(self.start(key, call))

    def _finished(self, key: K, future: asyncio.Future[V]) -> None:
        self._inflight.pop(key, None)
        # Retrieve the outcome so a call whose callers all left is not reported as unhandled.
        if not future.cancelled():
            future.exception()
