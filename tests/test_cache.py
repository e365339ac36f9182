"""The validation cache and single flight."""

from __future__ import annotations

import asyncio
import hashlib
import hmac

import pytest

from gateway.cache import CookieHasher, SingleFlight, TTLCache


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_entries_expire_after_their_ttl() -> None:
    """An entry is served until its ttl passes, then gone."""
    clock = Clock()
    cache: TTLCache[str, int] = TTLCache(10, clock)
    cache.put("a", 1, ttl=5)
    clock.now = 4.9
    assert cache.get("a") == 1
    clock.now = 5.0
    assert cache.get("a") is None
    assert len(cache) == 0


def test_kept_entry_is_stale_not_fresh_until_its_keep_ends() -> None:
    """Past its ttl an entry kept longer is only `stale`; past the keep it is gone."""
    clock = Clock()
    cache: TTLCache[str, int] = TTLCache(10, clock)
    cache.put("a", 1, ttl=5, keep=3)
    assert (cache.get("a"), cache.stale("a")) == (1, 1)
    clock.now = 7.9
    assert (cache.get("a"), cache.stale("a")) == (None, 1)
    clock.now = 8.0
    assert cache.stale("a") is None
    assert len(cache) == 0


def test_size_is_bounded_least_recently_used_first() -> None:
    """Past max_entries the least recently used entry is evicted."""
    cache: TTLCache[str, int] = TTLCache(2, Clock())
    cache.put("a", 1, 10)
    cache.put("b", 2, 10)
    assert cache.get("a") == 1
    cache.put("c", 3, 10)
    assert cache.get("b") is None
    assert cache.get("a") == 1
    assert cache.get("c") == 3


def test_discard_removes_an_entry() -> None:
    """discard drops an entry and says whether it was there."""
    cache: TTLCache[str, int] = TTLCache(2, Clock())
    cache.put("a", 1, 10)
    assert cache.discard("a") is True
    assert cache.discard("a") is False


def test_hasher_is_keyed_and_stable() -> None:
    """The same cookie gives the same digest in one process, a different one under another key."""
    one, two = CookieHasher(b"k" * 32), CookieHasher(b"j" * 32)
    assert one("abc") == one("abc")
    assert one("abc") != two("abc")
    assert "abc" not in one("abc")
    assert len(one("abc")) == 64


def test_hasher_with_a_secret_is_hmac_sha256() -> None:
    """Under a shared secret the digest is hex HMAC-SHA256, the same in every process."""
    secret = "shared-cache-test-secret"
    hasher = CookieHasher.from_secret(secret)
    assert hasher.shared
    expected = hmac.new(secret.encode(), "sess\u00e9".encode(), hashlib.sha256).hexdigest()
    assert hasher("sess\u00e9") == expected == CookieHasher.from_secret(secret)("sess\u00e9")


@pytest.mark.parametrize("secret", [None, ""])
def test_hasher_without_a_secret_is_keyed_per_process(secret: str | None) -> None:
    """No (or an empty) secret gives a random per-process key, never an unkeyed hash."""
    one, two = CookieHasher.from_secret(secret), CookieHasher.from_secret(secret)
    assert not one.shared
    assert one("abc") == one("abc") != two("abc")
    assert one("abc") != hashlib.blake2b(b"abc", digest_size=32).hexdigest()


@pytest.mark.parametrize("value", ["abcdef", "a" * 64, "0123456789abcdef", "sess\u00e9"])
def test_digest_does_not_contain_the_cookie(value: str) -> None:
    """The digest is 64 lowercase hex characters and shows nothing of the cookie value."""
    digest = CookieHasher(b"k" * 32)(value)
    assert len(digest) == 64 and set(digest) <= set("0123456789abcdef")
    assert value not in digest


async def test_single_flight_shares_one_call() -> None:
    """Concurrent callers with one key share a single call and its result."""
    calls = 0
    gate = asyncio.Event()

    async def call() -> int:
        nonlocal calls
        calls += 1
        await gate.wait()
        return 42

    flight: SingleFlight[str, int] = SingleFlight()
    waiters = [asyncio.ensure_future(flight.run("k", call)) for _ in range(20)]
    await asyncio.sleep(0)
    gate.set()
    assert await asyncio.gather(*waiters) == [42] * 20
    assert calls == 1
    assert len(flight) == 0


async def test_single_flight_survives_a_caller_leaving() -> None:
    """A caller that is cancelled does not cancel the shared call for the others."""
    gate = asyncio.Event()

    async def call() -> str:
        await gate.wait()
        return "done"

    flight: SingleFlight[str, str] = SingleFlight()
    first = asyncio.ensure_future(flight.run("k", call))
    second = asyncio.ensure_future(flight.run("k", call))
    await asyncio.sleep(0)
    first.cancel()
    gate.set()
    assert await second == "done"


async def test_single_flight_shares_errors_then_forgets_them() -> None:
    """A failed call fails every waiter, and the next call is made afresh."""
    attempts = 0

    async def call() -> int:
        nonlocal attempts
        attempts += 1
        raise RuntimeError("down")

    flight: SingleFlight[str, int] = SingleFlight()
    results = await asyncio.gather(
        flight.run("k", call), flight.run("k", call), return_exceptions=True
    )
    assert all(isinstance(r, RuntimeError) for r in results)
    with pytest.raises(RuntimeError):
        await flight.run("k", call)
    assert attempts == 2
