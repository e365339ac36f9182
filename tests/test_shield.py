"""The shield for the auth API: negative cache, cap on calls in flight, per-client limit."""

from __future__ import annotations

import asyncio
import secrets

import aiohttp

from gateway.config import Rate
from gateway.shield import SlidingWindowLimiter, retry_after
from tests.support.harness import GOOD, GatewayFactory, Gw, eventually

FLOOD = 5000
FLOOD_IP = "203.0.113.7"
USER_IP = "198.51.100.1"


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_sliding_window_never_allows_more_than_the_rate_in_any_window() -> None:
    """30/minute means no 60-second window holds more than 30 events for one client."""
    clock = Clock()
    limiter = SlidingWindowLimiter(Rate(30, 60.0), clock)
    assert all(limiter.acquire("a") is None for _ in range(30))
    wait = limiter.acquire("a")
    assert wait is not None and 59 < wait <= 60
    assert limiter.acquire("b") is None
    clock.now += 59.9
    assert limiter.acquire("a") is not None
    clock.now += 0.2
    assert limiter.acquire("a") is None


def test_retry_after_is_whole_seconds_at_least_one() -> None:
    """Retry-After is a whole number of seconds, never 0."""
    assert [retry_after(s) for s in (0.0, 0.2, 1.0, 1.2, 59.5)] == ["1", "1", "1", "2", "60"]


async def get(
    session: aiohttp.ClientSession, gw: Gw, cookie: str, ip: str
) -> tuple[int, str | None]:
    headers = {"Cookie": f"session={cookie}", "X-Forwarded-For": ip, "Accept": "application/json"}
    async with session.get(
        gw.url + "/dashboard", headers=headers, allow_redirects=False
    ) as response:
        await response.read()
        return response.status, response.headers.get("Retry-After")


async def test_flood_of_random_cookies_is_shielded(gateway_factory: GatewayFactory) -> None:
    """5,000 random cookies from one client cost at most 30 calls, never more than max_inflight at
    once, while a signed-in user's requests in the same run all get 200."""
    gw = await gateway_factory(
        trusted_proxies=["127.0.0.1/32"],
        auth={"unknown_session_limit": "30/minute", "max_inflight": 4, "negative_ttl": 5},
    )
    gw.api.delay = 0.02
    connector = aiohttp.TCPConnector(limit=100)
    async with aiohttp.ClientSession(connector=connector) as session:
        assert (await get(session, gw, GOOD, USER_IP))[0] == 200
        calls_before = len(gw.api.calls)
        flood = [get(session, gw, secrets.token_urlsafe(16), FLOOD_IP) for _ in range(FLOOD)]
        user = [get(session, gw, GOOD, USER_IP) for _ in range(200)]
        results = await asyncio.gather(*flood, *user)
    flood_results, user_results = results[:FLOOD], results[FLOOD:]
    assert all(status == 200 for status, _ in user_results)
    statuses = [status for status, _ in flood_results]
    assert set(statuses) <= {401, 429, 503}
    assert statuses.count(429) >= FLOOD - 30
    assert all(int(after or 0) >= 1 for status, after in flood_results if status == 429)
    assert len(gw.api.calls) - calls_before <= 30
    assert gw.api.max_inflight <= 4


async def test_negative_ttl_remembers_a_refused_cookie(gateway_factory: GatewayFactory) -> None:
    """A cookie the API refused is refused again from memory within negative_ttl."""
    gw = await gateway_factory(auth={"negative_ttl": 5})
    async with aiohttp.ClientSession() as session:
        for _ in range(3):
            assert (await get(session, gw, "refused-token", ""))[0] == 401
    assert len(gw.api.calls) == 1


async def test_calls_beyond_max_inflight_wait_then_get_503(gateway_factory: GatewayFactory) -> None:
    """Validations beyond max_inflight wait up to the auth timeout, then get 503."""
    gw = await gateway_factory(auth={"max_inflight": 2, "timeout": 0.3, "cache_ttl": 0})
    gw.api.delay = 1.0
    async with aiohttp.ClientSession() as session:
        results = await asyncio.gather(*(get(session, gw, f"t-{n}", "") for n in range(6)))
    assert {status for status, _ in results} == {503}
    assert gw.api.max_inflight <= 2


async def test_a_call_given_up_on_keeps_its_slot_while_the_api_works_on_it(
    gateway_factory: GatewayFactory,
) -> None:
    """A validation that timed out still counts against max_inflight until the API answers."""
    gw = await gateway_factory(auth={"max_inflight": 1, "timeout": 0.3, "cache_ttl": 0})
    gw.api.delay = 1.0
    async with aiohttp.ClientSession() as session:
        first = asyncio.ensure_future(get(session, gw, "t-first", ""))
        await eventually(lambda: gw.api.inflight == 1)
        # Waits for the slot past the first call's timeout, while the API still works on it.
        second = await get(session, gw, "t-second", "")
        assert ((await first)[0], second[0]) == (503, 503)
    assert gw.api.max_inflight == 1
    assert len(gw.api.calls) == 1
