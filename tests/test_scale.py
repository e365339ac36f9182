"""Two replicas (two gateway processes, `workers: 1` each) sharing one real redis-server.

The replicas share validations through Redis and hear each other's revocations over pub/sub.
Redis is only an optimisation: killed mid-run, no request fails, /readyz says "degraded", and all
of it comes back when Redis does.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from gateway.config import load_config
from tests.support.backends import GOOD_USER
from tests.support.harness import GOOD, Backend
from tests.support.process import GatewayProcess, free_port, wait_for_port
from tests.support.redis_server import RedisServer, redis_available, start_redis
from tests.test_workers import (
    admin_json,
    calls_for,
    count_lines,
    fresh_client,
    gateway_yaml,
    get_status,
    poll,
    revoke,
    statuses,
)

SECRET = "scale-test-shared-secret-0123"
ADMIN_TOKEN = "scale-test-admin-token-0123"
REVOKE_BOUND = 1.0

SCALE_CONFIG = Path(__file__).resolve().parent.parent / "config" / "gateway.scale.yaml"


@dataclass
class Replica:
    """One gateway process of the pair."""

    name: str
    process: GatewayProcess
    port: int
    admin_port: int

    @property
    def output(self) -> str:
        return self.process.output

    async def readyz(self) -> tuple[int, dict[str, Any]]:
        return await admin_json(self.admin_port, "/readyz")


ReplicaFactory = Callable[..., Awaitable[Replica]]


@pytest.fixture
async def redis_server() -> AsyncIterator[RedisServer]:
    """A real redis-server on a free loopback port, killed at the end."""
    if not redis_available():
        pytest.skip("redis-server is not installed")
    server = await start_redis()
    yield server
    await server.aclose()


@pytest.fixture
async def replica_factory(
    tmp_path: Path, frontend: Backend, auth_api: Backend, redis_server: RedisServer
) -> AsyncIterator[ReplicaFactory]:
    """Starts gateway processes pointed at the shared Redis; SIGTERMs them (exit 0) at the end."""
    started: list[Replica] = []

    async def start(name: str, **overrides: Any) -> Replica:
        auth_overrides = dict(overrides.pop("auth", {}))
        cache = {
            "backend": "redis",
            "url": redis_server.url,
            "secret": SECRET,
            "local_ttl": 300,
            **auth_overrides.pop("cache", {}),
        }
        auth = {"cache_ttl": 300, "cache": cache, **auth_overrides}
        settings: dict[str, Any] = {
            "workers": 1,
            "admin_token": ADMIN_TOKEN,
            "auth": auth,
            **overrides,
        }
        port, admin_port = free_port(), free_port()
        config = tmp_path / f"{name}.yaml"
        config.write_text(gateway_yaml(frontend, auth_api, port, admin_port, **settings))
        process = GatewayProcess(config, tmp_path / f"{name}.log")
        replica = Replica(name, process, port, admin_port)
        started.append(replica)
        await process.wait_for_output('"gateway started"')
        await wait_for_port(port)
        await wait_for_port(admin_port)
        return replica

    yield start
    codes = {}
    for replica in started:
        replica.process.signal(signal.SIGTERM)
    for replica in started:
        try:
            codes[replica.name] = await replica.process.wait_exit()
        finally:
            replica.process.kill()
    assert all(code == 0 for code in codes.values()), codes


@pytest.fixture
async def pair(replica_factory: ReplicaFactory) -> tuple[Replica, Replica]:
    """Replicas A and B: cache_ttl and local_ttl 300 s, so only a revocation ends a session."""
    return await replica_factory("a"), await replica_factory("b")


def digest_of(cookie: str) -> str:
    return hmac.new(SECRET.encode(), cookie.encode(), hashlib.sha256).hexdigest()


def new_session(auth_api: Backend, token: str) -> str:
    auth_api.state.sessions[token] = dict(GOOD_USER)
    return token


async def test_a_validation_on_one_replica_is_a_hit_on_the_other(
    pair: tuple[Replica, Replica], auth_api: Backend
) -> None:
    """A session validated through replica A is served by replica B without asking the API."""
    a, b = pair
    token = new_session(auth_api, "shared-hit-0123456789")
    assert await statuses(a.port, "/dashboard", 1, token) == [200]
    assert await statuses(b.port, "/dashboard", 1, token) == [200]
    assert calls_for(auth_api, token) == 1
    status, body = await b.readyz()
    assert status == 200
    assert body["checks"]["redis"] == "ok"


async def test_revocation_on_one_replica_reaches_the_other_within_a_second(
    pair: tuple[Replica, Replica], auth_api: Backend
) -> None:
    """POST /sessions/revoke on A: B, which had the session cached, refuses it within 1 s."""
    a, b = pair
    token = new_session(auth_api, "revoke-across-0123456789")
    assert await statuses(a.port, "/dashboard", 1, token) == [200]
    assert await statuses(b.port, "/dashboard", 1, token) == [200]
    assert calls_for(auth_api, token) == 1
    del auth_api.state.sessions[token]
    # Both still have it cached: without the revocation they would serve it for 300 s.
    assert await statuses(a.port, "/dashboard", 3, token) == [200] * 3
    assert await statuses(b.port, "/dashboard", 3, token) == [200] * 3

    async with fresh_client() as client:
        started = time.perf_counter()
        status, body = await revoke(a.admin_port, ADMIN_TOKEN, session=token)
        assert status == 200, body
        assert body["shared"] is True
        assert body["local"] is True
        assert body["digest"] == digest_of(token)

        async def refused_on_b() -> bool:
            return await get_status(client, b.port, "/dashboard", token) == 302

        await poll(refused_on_b, what="B refusing the revoked session")
        latency = time.perf_counter() - started
    print(f"\nrevoke on A -> rejection on B: {latency * 1000:.1f} ms")
    assert latency < REVOKE_BOUND
    assert await statuses(a.port, "/dashboard", 3, token) == [302] * 3
    assert await statuses(b.port, "/dashboard", 3, token) == [302] * 3


async def test_revocation_by_digest_and_the_admin_token(
    pair: tuple[Replica, Replica], auth_api: Backend
) -> None:
    """Revoking by HMAC digest works on every replica; a wrong or missing bearer token is 401."""
    a, b = pair
    token = new_session(auth_api, "revoke-digest-0123456789")
    assert await statuses(a.port, "/dashboard", 1, token) == [200]
    assert await statuses(b.port, "/dashboard", 1, token) == [200]
    del auth_api.state.sessions[token]

    status, _ = await revoke(b.admin_port, None, digest=digest_of(token))
    assert status == 401
    status, _ = await revoke(b.admin_port, "not-the-admin-token-0123", digest=digest_of(token))
    assert status == 401
    status, _ = await revoke(b.admin_port, ADMIN_TOKEN.upper(), digest=digest_of(token))
    assert status == 401
    # None of those took effect.
    assert await statuses(a.port, "/dashboard", 2, token) == [200] * 2
    assert await statuses(b.port, "/dashboard", 2, token) == [200] * 2

    status, body = await revoke(b.admin_port, ADMIN_TOKEN, digest=digest_of(token))
    assert status == 200, body
    assert body["shared"] is True

    async def refused_on_a() -> bool:
        return await statuses(a.port, "/dashboard", 1, token) == [302]

    await poll(refused_on_a, what="A refusing the session revoked by digest on B")
    assert await statuses(b.port, "/dashboard", 2, token) == [302] * 2
    # GOOD was never revoked.
    assert await statuses(a.port, "/dashboard", 2, GOOD) == [200] * 2


async def test_revocation_without_an_admin_token_is_not_found(
    replica_factory: ReplicaFactory,
) -> None:
    """With no admin_token configured, POST /sessions/revoke is 404 (disabled), token or not."""
    replica = await replica_factory("no-token", admin_token=None)
    status, body = await revoke(replica.admin_port, None, session=GOOD)
    assert status == 404
    assert "admin_token" in body["error"]
    status, _ = await revoke(replica.admin_port, ADMIN_TOKEN, session=GOOD)
    assert status == 404


async def test_a_replica_that_never_saw_a_session_serves_it_stale_from_redis(
    replica_factory: ReplicaFactory, auth_api: Backend, redis_server: RedisServer
) -> None:
    """API erring past the ttl: B, which never saw the session, serves A's validation stale from
    Redis (a key living cache_ttl + stale_if_error); a revocation on A removes every copy."""
    ttl, settings = 1.0, {"auth": {"cache_ttl": 1, "stale_if_error": 30}}
    a, b = await replica_factory("a", **settings), await replica_factory("b", **settings)
    token = new_session(auth_api, "stale-across-0123456789")
    assert await statuses(a.port, "/dashboard", 1, token) == [200]
    signed_in = time.monotonic()
    auth_api.state.answer = (503, "down for maintenance")
    async with Redis.from_url(redis_server.url) as raw:
        # The shared key outlives cache_ttl by stale_if_error.
        assert 30_000 < await raw.pttl(f"hamrah-gateway:session:{digest_of(token)}") <= 31_000
    await asyncio.sleep(max(0.0, signed_in + ttl + 0.05 - time.monotonic()))
    assert await statuses(b.port, "/dashboard", 2, token) == [200, 200]
    await b.process.wait_for_output('"auth":"stale"')
    assert calls_for(auth_api, token) == 3

    status, body = await revoke(a.admin_port, ADMIN_TOKEN, session=token)
    assert (status, body["shared"]) == (200, True), body

    async def refused_on_b() -> bool:
        return await statuses(b.port, "/dashboard", 1, token) == [503]

    await poll(refused_on_b, what="B refusing the revoked session's stale copy")
    assert await statuses(a.port, "/dashboard", 1, token) == [503]
    async with Redis.from_url(redis_server.url) as raw:
        assert await raw.keys("hamrah-gateway:session:*") == []


@dataclass
class Stream:
    """Requests with a valid session, alternating between the replicas, until stopped."""

    replicas: tuple[Replica, Replica]
    cookie: str
    results: list[tuple[str, int | str]] = field(default_factory=list)
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self) -> None:
        async with fresh_client() as client:
            while not self.stop.is_set():
                for replica in self.replicas:
                    try:
                        status: int | str = await get_status(
                            client, replica.port, "/dashboard", self.cookie
                        )
                    except Exception as exc:
                        status = repr(exc)
                    self.results.append((replica.name, status))
                await asyncio.sleep(0.01)

    def failures(self) -> list[tuple[str, int | str]]:
        return [result for result in self.results if result[1] != 200]

    async def sent_more(self, count: int) -> None:
        """Wait until `count` more requests have been answered."""
        target = len(self.results) + count

        async def enough() -> bool:
            return len(self.results) >= target

        await poll(enough, what=f"{count} more requests")


async def test_redis_killed_and_restarted_mid_run(
    replica_factory: ReplicaFactory, redis_server: RedisServer, auth_api: Backend
) -> None:
    """Redis SIGKILLed and restarted under load: no request fails, /readyz degraded then ok."""
    # A short local level, so that during the outage validations expire and are redone without
    # Redis, rather than all being served from memory.
    auth = {"cache": {"local_ttl": 0.5}}
    a = await replica_factory("a", auth=auth)
    b = await replica_factory("b", auth=auth)
    stream = Stream((a, b), GOOD)
    task = asyncio.ensure_future(stream.run())
    try:
        await stream.sent_more(20)
        outage = time.perf_counter()
        await redis_server.stop()  # SIGKILL

        async def both_degraded() -> bool:
            for replica in (a, b):
                status, body = await replica.readyz()
                assert status == 200, body  # degraded, still ready
                if not body["checks"]["redis"].startswith("degraded"):
                    return False
                assert body["status"] == "degraded", body
            return True

        await poll(both_degraded, what="/readyz degraded on both replicas")
        for replica in (a, b):
            _, body = await replica.readyz()
            print(f"\n{replica.name} /readyz while Redis is down: {body['checks']['redis']}")
        detected = time.perf_counter() - outage
        # Served while Redis is down: local entries expire and are validated again by the API.
        calls_down = calls_for(auth_api, GOOD)

        async def revalidated() -> bool:
            return calls_for(auth_api, GOOD) >= calls_down + 2

        await poll(revalidated, what="validations through the auth API while Redis is down")
        await stream.sent_more(20)
        await redis_server.start()  # the same port, empty
        back = time.perf_counter()

        async def both_ok() -> bool:
            for replica in (a, b):
                status, body = await replica.readyz()
                if status != 200 or body["checks"]["redis"] != "ok" or body["status"] != "ready":
                    return False
            return True

        await poll(both_ok, what="/readyz ok again on both replicas")
        recovered = time.perf_counter() - back
        await stream.sent_more(20)
    finally:
        stream.stop.set()
        await task
    print(
        f"{len(stream.results)} requests through the outage, {len(stream.failures())} failed;"
        f" degraded seen after {detected * 1000:.0f} ms, ok again after {recovered * 1000:.0f} ms"
    )
    assert stream.failures() == []
    assert {name for name, _ in stream.results} == {"a", "b"}

    # The shared cache works again: a new session validated on A is a hit on B.
    token = new_session(auth_api, "after-outage-0123456789")
    assert await statuses(a.port, "/dashboard", 1, token) == [200]
    assert await statuses(b.port, "/dashboard", 1, token) == [200]
    assert calls_for(auth_api, token) == 1

    # Each change of state logged once per replica.
    for replica in (a, b):
        assert count_lines(replica.output, "shared cache unavailable") == 1, replica.output
        assert count_lines(replica.output, "shared cache available again") == 1, replica.output


def test_the_compose_scale_config_is_valid() -> None:
    """config/gateway.scale.yaml loads with its defaults: Redis cache, admin token, one worker,
    stale_if_error 300."""
    config = load_config(SCALE_CONFIG, env={})
    assert config.auth.stale_if_error == 300
    assert config.auth.cache.backend == "redis"
    assert config.auth.cache.url == "redis://redis:6379/0"
    assert config.auth.cache.secret is not None
    assert config.admin_token is not None
    assert config.worker_count == 1
    env = {"GATEWAY_WORKERS": "auto", "GATEWAY_CACHE_SECRET": "s" * 32, "AUTH_LOCAL_TTL": "2"}
    config = load_config(SCALE_CONFIG, env=env)
    assert config.workers == "auto"
    assert config.auth.cache.secret == "s" * 32
    assert config.auth.cache.local_ttl == 2
