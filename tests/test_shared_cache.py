"""The Redis-backed shared cache, against a real redis-server on loopback (killed, hung, back)."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest
from redis.asyncio import Redis
from structlog.testing import capture_logs

from gateway.cache import CookieHasher
from gateway.shared_cache import SharedCache
from tests.support.process import free_port
from tests.support.redis_server import RedisServer, redis_available, start_redis

OP_TIMEOUT = 0.25
RETRY_INTERVAL = 0.2
# How much longer than op_timeout a failing call may take (scheduling, a refused connect).
MARGIN = 0.15
DEADLINE = 5.0
CLAIMS: dict[str, Any] = {"user": {"id": "u-1", "email": "a@example.com"}, "admin": False}
SECRET = b"shared-cache-test-secret"
# What every replica configured with SECRET makes of a cookie value.
digest_of = CookieHasher(SECRET)

pytestmark = pytest.mark.skipif(not redis_available(), reason="redis-server is not installed")


@dataclass
class Replica:
    """One gateway replica's shared cache and the revocations it was told about."""

    cache: SharedCache
    revoked: list[tuple[str, float]] = field(default_factory=list)
    resubscribed: int = 0

    @property
    def digests(self) -> list[str]:
        return [digest for digest, _ in self.revoked]


ReplicaFactory = Callable[..., Awaitable[Replica]]


@pytest.fixture
async def redis_server() -> AsyncIterator[RedisServer]:
    """A real redis-server on a free loopback port, killed at the end."""
    server = await start_redis()
    yield server
    await server.aclose()


@pytest.fixture
async def replica_factory() -> AsyncIterator[ReplicaFactory]:
    """Started SharedCache instances (replicas) with short timeouts, closed at the end."""
    made: list[SharedCache] = []

    async def make(url: str, **options: Any) -> Replica:
        replica: Replica

        def on_revoke(digest: str) -> None:
            replica.revoked.append((digest, time.perf_counter()))

        def on_resubscribe() -> None:
            replica.resubscribed += 1

        options = {"op_timeout": OP_TIMEOUT, "retry_interval": RETRY_INTERVAL, **options}
        cache = SharedCache(url, on_revoke=on_revoke, on_resubscribe=on_resubscribe, **options)
        replica = Replica(cache)
        made.append(cache)
        await cache.start()
        return replica

    yield make
    for cache in made:
        await cache.close()


async def wait_until(condition: Callable[[], bool], deadline: float = DEADLINE) -> float:
    """Poll until the condition holds; return how long it took; fail after the deadline."""
    started = time.perf_counter()
    async with asyncio.timeout(deadline):
        while not condition():
            await asyncio.sleep(0.005)
    return time.perf_counter() - started


async def timed(call: Awaitable[Any]) -> tuple[Any, float]:
    started = time.perf_counter()
    result = await call
    return result, time.perf_counter() - started


def down_lines(logs: list[MutableMapping[str, Any]]) -> list[MutableMapping[str, Any]]:
    return [e for e in logs if e["event"] == "shared cache unavailable"]


def up_lines(logs: list[MutableMapping[str, Any]]) -> list[MutableMapping[str, Any]]:
    return [e for e in logs if e["event"] == "shared cache available again"]


# -- caching between replicas ---------------------------------------------------------------------


async def test_put_on_one_replica_is_read_by_another(
    redis_server: RedisServer, replica_factory: ReplicaFactory
) -> None:
    """A put on one replica is a hit on a second replica, and expires after its ttl."""
    a = await replica_factory(redis_server.url)
    b = await replica_factory(redis_server.url)
    assert a.cache.healthy and b.cache.healthy
    assert a.cache.status == b.cache.status == "ok"
    digest = digest_of("cookie-put-get")
    assert await b.cache.get(digest) is None

    await a.cache.put(digest, CLAIMS, ttl=0.3)
    stored = time.perf_counter()
    assert await claims_in(b.cache, digest) == CLAIMS

    await wait_until_none(b.cache, digest)
    gone_after = time.perf_counter() - stored
    print(f"\nentry with ttl 0.3s gone {gone_after:.3f}s after the put")
    assert gone_after >= 0.25


async def claims_in(cache: SharedCache, digest: str) -> dict[str, Any] | None:
    entry = await cache.get(digest)
    return None if entry is None else entry.claims


async def wait_until_none(cache: SharedCache, digest: str) -> float:
    started = time.perf_counter()
    async with asyncio.timeout(DEADLINE):
        while await cache.get(digest) is not None:
            await asyncio.sleep(0.01)
    return time.perf_counter() - started


async def test_stored_as_json_under_prefix_with_ttl_and_no_cookie(
    redis_server: RedisServer, replica_factory: ReplicaFactory
) -> None:
    """Redis holds key_prefix + digest -> JSON claims with a PX ttl get reports; no cookie."""
    cookie = "raw-cookie-value-must-not-leave-0123"
    a = await replica_factory(redis_server.url, key_prefix="gw-test:")
    digest = digest_of(cookie)
    await a.cache.put(digest, CLAIMS, ttl=30)
    await a.cache.revoke(digest_of("other"))

    async with Redis.from_url(redis_server.url) as raw:
        keys = await raw.keys("*")
        assert keys == [f"gw-test:{digest}".encode()]
        key, value = keys[0], await raw.get(keys[0])
        assert isinstance(key, bytes) and isinstance(value, bytes)
        assert orjson.loads(value) == CLAIMS
        assert 29_000 < await raw.pttl(key) <= 30_000
        assert cookie.encode() not in key + value
    entry = await a.cache.get(digest)
    assert entry is not None and 29 < entry.ttl <= 30


@pytest.mark.parametrize(
    "stored",
    [b"not json", b"[1, 2]", b'"a string"', b"null"],
    ids=["not-json", "list", "string", "null"],
)
async def test_entry_that_is_not_a_json_object_is_a_miss(
    redis_server: RedisServer, replica_factory: ReplicaFactory, stored: bytes
) -> None:
    """A value that is not a JSON object (corrupt, or written by something else) is a miss."""
    a = await replica_factory(redis_server.url)
    digest = digest_of("cookie-corrupt")
    async with Redis.from_url(redis_server.url) as raw:
        await raw.set(f"hamrah-gateway:session:{digest}", stored)
    assert await a.cache.get(digest) is None
    assert a.cache.healthy


@pytest.mark.parametrize("ttl", [0, -1.0])
async def test_put_with_no_ttl_stores_nothing(
    redis_server: RedisServer, replica_factory: ReplicaFactory, ttl: float
) -> None:
    """A put whose ttl is not positive stores nothing."""
    a = await replica_factory(redis_server.url)
    digest = digest_of("cookie-ttl")
    await a.cache.put(digest, CLAIMS, ttl=ttl)
    assert await a.cache.get(digest) is None


# -- revocation broadcast -------------------------------------------------------------------------


async def test_revoke_reaches_the_other_replica(
    redis_server: RedisServer, replica_factory: ReplicaFactory
) -> None:
    """A revoke on one replica calls on_revoke(digest) on the other within 1s; the key is gone."""
    a = await replica_factory(redis_server.url)
    b = await replica_factory(redis_server.url)
    digest = digest_of("cookie-revoke")
    await a.cache.put(digest, CLAIMS, ttl=30)
    assert await claims_in(b.cache, digest) == CLAIMS

    started = time.perf_counter()
    assert await a.cache.revoke(digest) is True
    await wait_until(lambda: bool(b.revoked), deadline=1.0)
    latency = b.revoked[0][1] - started
    print(f"\nrevoke latency (publish on A -> on_revoke on B): {latency * 1000:.2f} ms")
    assert b.digests == [digest]
    assert latency < 1.0
    assert await b.cache.get(digest) is None
    # The publisher hears its own broadcast too (harmless: it evicts locally anyway).
    await wait_until(lambda: a.digests == [digest], deadline=1.0)


async def test_revoke_latency_over_many_messages(
    redis_server: RedisServer, replica_factory: ReplicaFactory
) -> None:
    """Many revocations in a row all arrive, in order, each well within 1s."""
    a = await replica_factory(redis_server.url)
    b = await replica_factory(redis_server.url)
    digests = [digest_of(f"cookie-{i}") for i in range(200)]
    sent: dict[str, float] = {}
    for digest in digests:
        sent[digest] = time.perf_counter()
        assert await a.cache.revoke(digest)
    await wait_until(lambda: len(b.revoked) == len(digests), deadline=2.0)
    assert b.digests == digests
    latencies = sorted(at - sent[digest] for digest, at in b.revoked)
    p50, worst = latencies[len(latencies) // 2], latencies[-1]
    print(f"\n200 revokes: latency p50 {p50 * 1000:.2f} ms, max {worst * 1000:.2f} ms")
    assert worst < 1.0


async def test_malformed_broadcast_and_failing_callback_do_not_stop_the_subscription(
    redis_server: RedisServer, replica_factory: ReplicaFactory
) -> None:
    """A non-digest message is ignored and a raising on_revoke is logged; later ones arrive."""
    calls: list[str] = []

    def on_revoke(digest: str) -> None:
        calls.append(digest)
        if len(calls) == 1:
            raise RuntimeError("callback bug")

    cache = SharedCache(
        redis_server.url, on_revoke=on_revoke, op_timeout=OP_TIMEOUT, retry_interval=1.0
    )
    await cache.start()
    try:
        first, second = digest_of("one"), digest_of("two")
        with capture_logs() as logs:
            async with Redis.from_url(redis_server.url) as raw:
                for message in ["raw-cookie-value", first.upper(), first, second]:
                    await raw.publish("hamrah-gateway:revoked", message)
            await wait_until(lambda: len(calls) == 2, deadline=1.0)
        assert calls == [first, second]
        events = [e["event"] for e in logs]
        assert events.count("shared cache ignored a malformed revocation message") == 2
        assert events.count("shared cache callback failed") == 1
        assert cache.healthy
    finally:
        await cache.close()


async def test_idle_subscription_is_kept_alive_without_reconnecting(
    redis_server: RedisServer, replica_factory: ReplicaFactory
) -> None:
    """An idle replica PINGs its subscription every retry_interval and keeps the same connection."""
    a = await replica_factory(redis_server.url)
    async with Redis.from_url(redis_server.url) as raw:

        async def pings() -> int:
            stats = await raw.info("commandstats")
            calls: int = stats.get("cmdstat_ping", {}).get("calls", 0)
            return calls

        async with asyncio.timeout(DEADLINE):
            while await pings() < 6:
                await asyncio.sleep(RETRY_INTERVAL / 2)
    assert a.cache.healthy
    assert a.resubscribed == 0


# -- Redis going away and coming back -------------------------------------------------------------


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["sigkill", "sigterm"])
async def test_redis_down_degrades_fast_and_logs_once(
    redis_server: RedisServer, replica_factory: ReplicaFactory, sig: signal.Signals
) -> None:
    """Redis stopped: calls return None/no error fast, status degraded, one warning for many."""
    a = await replica_factory(redis_server.url)
    digest = digest_of("cookie-down")
    await a.cache.put(digest, CLAIMS, ttl=30)

    with capture_logs() as logs:
        await redis_server.stop(sig)
        durations = []
        for _ in range(50):
            result, took = await timed(a.cache.get(digest))
            assert result is None
            durations.append(took)
            _, took = await timed(a.cache.put(digest, CLAIMS, ttl=30))
            durations.append(took)
        revoked, took = await timed(a.cache.revoke(digest))
        assert revoked is False
        durations.append(took)
        await wait_until(lambda: not a.cache.healthy)
        # The background task fails a reconnect attempt too (connection refused), unlogged.
        await wait_until(lambda: "Error 111" in a.cache.status)

    print(f"\nfailed calls: max {max(durations) * 1000:.2f} ms, sum {sum(durations) * 1000:.2f} ms")
    assert max(durations) < OP_TIMEOUT + MARGIN
    assert a.cache.status.startswith("degraded: ")
    lines = down_lines(logs)
    assert len(lines) == 1, lines
    assert lines[0]["log_level"] == "warning"
    assert "cookie-down" not in str(logs)


async def test_hung_redis_costs_one_op_timeout_then_nothing(
    redis_server: RedisServer, replica_factory: ReplicaFactory
) -> None:
    """Redis hung (SIGSTOP): one call waits op_timeout, the rest skip the network; SIGCONT heals."""
    a = await replica_factory(redis_server.url)
    digest = digest_of("cookie-hung")
    await a.cache.put(digest, CLAIMS, ttl=30)

    with capture_logs() as logs:
        redis_server.pause()
        try:
            first, first_took = await timed(a.cache.get(digest))
            assert first is None
            assert OP_TIMEOUT * 0.8 <= first_took < OP_TIMEOUT + MARGIN
            assert not a.cache.healthy
            assert "no answer within 0.25s" in a.cache.status or "Timeout" in a.cache.status
            started = time.perf_counter()
            for _ in range(100):
                assert await a.cache.get(digest) is None
                await a.cache.put(digest, CLAIMS, ttl=30)
            rest = time.perf_counter() - started
            print(f"\nhung: first call {first_took * 1000:.1f} ms, next 200: {rest * 1000:.2f} ms")
            assert rest < OP_TIMEOUT
        finally:
            redis_server.resume()
        healed = await wait_until(lambda: a.cache.healthy)
    print(f"healthy again {healed * 1000:.0f} ms after SIGCONT")
    assert await claims_in(a.cache, digest) == CLAIMS
    assert len(down_lines(logs)) == 1
    assert len(up_lines(logs)) == 1


async def test_redis_restart_heals_and_pubsub_works_again(
    redis_server: RedisServer, replica_factory: ReplicaFactory
) -> None:
    """Redis killed, restarted on the same port: both replicas heal by themselves, re-subscribed."""
    a = await replica_factory(redis_server.url)
    b = await replica_factory(redis_server.url)

    with capture_logs() as logs:
        await redis_server.stop()
        await wait_until(lambda: not a.cache.healthy and not b.cache.healthy)
        # The background task fails at least one reconnect attempt while it is down.
        await wait_until(lambda: "Error 111" in a.cache.status and "Error 111" in b.cache.status)
        await redis_server.restart()
        restarted = time.perf_counter()
        await wait_until(lambda: a.cache.healthy and b.cache.healthy)
        healed = time.perf_counter() - restarted
    print(f"\nboth replicas healthy {healed * 1000:.0f} ms after redis answered PING again")
    assert healed < RETRY_INTERVAL * 2 + OP_TIMEOUT + MARGIN
    assert a.cache.status == b.cache.status == "ok"
    assert len(down_lines(logs)) == 2  # one per replica
    assert len(up_lines(logs)) == 2
    assert a.resubscribed == b.resubscribed == 1

    digest = digest_of("cookie-after-restart")
    await b.cache.put(digest, CLAIMS, ttl=30)
    assert await claims_in(a.cache, digest) == CLAIMS
    started = time.perf_counter()
    assert await a.cache.revoke(digest) is True
    await wait_until(lambda: b.digests == [digest], deadline=1.0)
    print(f"revoke latency after restart: {(b.revoked[0][1] - started) * 1000:.2f} ms")
    assert await b.cache.get(digest) is None


async def test_redis_never_started(replica_factory: ReplicaFactory) -> None:
    """Nothing on the port: start() returns degraded without raising, and every call is a no-op."""
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    with capture_logs() as logs:
        a, took = await timed(replica_factory(url))
        assert took < 3 * OP_TIMEOUT + 0.5 + MARGIN
        assert not a.cache.healthy
        assert a.cache.status.startswith("degraded: ")
        assert str(port) in a.cache.status
        digest = digest_of("cookie-never")
        assert await a.cache.get(digest) is None
        await a.cache.put(digest, CLAIMS, ttl=30)
        assert await a.cache.revoke(digest) is False
    assert len(down_lines(logs)) == 1

    # When Redis appears later, the replica connects by itself.
    server = await start_redis(port)
    try:
        await wait_until(lambda: a.cache.healthy)
        await a.cache.put(digest, CLAIMS, ttl=30)
        assert await claims_in(a.cache, digest) == CLAIMS
    finally:
        await server.aclose()


@pytest.mark.parametrize(
    "url",
    ["redis://127.0.0.1:1/0", "redis://user:hunter2-password@127.0.0.1:1/0"],
    ids=["plain", "with-credentials"],
)
async def test_status_and_logs_carry_no_credentials(url: str) -> None:
    """The degraded status and the log line name the server but never its password."""
    cache = SharedCache(url, on_revoke=lambda _: None, op_timeout=OP_TIMEOUT)
    with capture_logs() as logs:
        await cache.start()
    try:
        assert cache.status.startswith("degraded: ")
        assert "hunter2" not in cache.status
        assert "hunter2" not in str(logs)
        assert down_lines(logs)[0]["redis"] == "redis://127.0.0.1:1/0"
    finally:
        await cache.close()


async def test_close_is_idempotent_and_leaves_nothing_running(
    redis_server: RedisServer,
) -> None:
    """close() twice is fine; afterwards the cache is degraded and its calls are no-ops."""
    cache = SharedCache(redis_server.url, on_revoke=lambda _: None, op_timeout=OP_TIMEOUT)
    assert cache.status == "degraded: not started"
    await cache.start()
    assert cache.healthy
    await cache.close()
    await cache.close()
    assert not cache.healthy
    assert cache.status == "degraded: closed"
    digest = digest_of("cookie-closed")
    assert await cache.get(digest) is None
    await cache.put(digest, CLAIMS, ttl=1)
    assert await cache.revoke(digest) is False
    assert not [t for t in asyncio.all_tasks() if t.get_name() == "shared-cache"]


@pytest.mark.parametrize("url", ["http://127.0.0.1:6379", "127.0.0.1:6379", ""])
def test_bad_url_is_refused_up_front(url: str) -> None:
    """A URL that is not redis://, rediss:// or unix:// is a configuration error."""
    with pytest.raises(ValueError, match="redis://"):
        SharedCache(url, on_revoke=lambda _: None)
