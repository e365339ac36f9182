"""The auth client: the validation call, the cache, single flight, identity headers."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import pytest

from gateway.auth import identity_from_claims
from gateway.errors import AuthUnavailable
from tests.support.harness import GOOD, GatewayFactory, Gw
from tests.support.rawhttp import exchange, get


async def fetch(gw: Gw, path: str, cookie: str | None = GOOD) -> aiohttp.ClientResponse:
    headers = {"Accept": "text/html"}
    if cookie is not None:
        headers["Cookie"] = f"session={cookie}"
    async with (
        aiohttp.ClientSession() as session,
        session.get(gw.url + path, headers=headers, allow_redirects=False) as response,
    ):
        await response.read()
        return response


async def test_validation_call_carries_only_what_it_should(gw: Gw) -> None:
    """The validate call carries only the session cookie, UA, X-Forwarded-For and X-Request-ID."""
    await exchange(
        gw.port,
        get(
            "/dashboard",
            f"Cookie: theme=dark; session={GOOD}; other=1",
            "Authorization: Bearer abc",
            "X-Request-ID: req-123",
            "Accept: text/html",
        ),
    )
    assert len(gw.api.calls) == 1
    headers = {k.lower(): v for k, v in gw.api.calls[0]["headers"]}
    assert headers["cookie"] == f"session={GOOD}"
    assert headers["user-agent"] == "hamrah-web-server/1.0"
    assert headers["x-forwarded-for"] == "127.0.0.1"
    assert headers["x-request-id"] == "req-123"
    assert set(headers) <= {"host", "cookie", "user-agent", "x-forwarded-for", "x-request-id"}


async def test_no_cookie_means_no_validation_call(gw: Gw) -> None:
    """A protected request without a session cookie is refused without calling the API."""
    response = await fetch(gw, "/dashboard", cookie=None)
    assert response.status == 302
    assert gw.api.calls == []


async def test_positive_result_is_cached(gw: Gw) -> None:
    """A second request with the same valid cookie is served from the cache."""
    assert (await fetch(gw, "/dashboard")).status == 200
    assert (await fetch(gw, "/settings")).status == 200
    assert len(gw.api.calls) == 1


async def test_cache_disabled_with_ttl_zero(gateway_factory: GatewayFactory) -> None:
    """cache_ttl: 0 validates every request."""
    gw = await gateway_factory(auth={"cache_ttl": 0})
    for _ in range(3):
        assert (await fetch(gw, "/dashboard")).status == 200
    assert len(gw.api.calls) == 3


async def test_cache_entry_expires(gateway_factory: GatewayFactory) -> None:
    """After cache_ttl the session is validated again (the cache is not forever)."""
    gw = await gateway_factory(auth={"cache_ttl": 0.2})
    assert (await fetch(gw, "/dashboard")).status == 200
    async with asyncio.timeout(5):
        while len(gw.api.calls) < 2:
            await asyncio.sleep(0.05)
            assert (await fetch(gw, "/dashboard")).status == 200


async def test_negative_result_is_not_cached(gw: Gw) -> None:
    """A refused cookie is asked about again, so a session that becomes valid works at once."""
    assert (await fetch(gw, "/dashboard", "later-valid")).status == 302
    gw.api.sessions["later-valid"] = {"id": "u-9"}
    assert (await fetch(gw, "/dashboard", "later-valid")).status == 200


async def test_concurrent_requests_share_one_validation(gw: Gw) -> None:
    """50 concurrent requests with one new cookie make one validation call between them."""
    gw.api.delay = 0.3
    responses = await asyncio.gather(*(fetch(gw, "/dashboard") for _ in range(50)))
    assert [r.status for r in responses] == [200] * 50
    assert len(gw.api.calls) == 1


async def test_cache_key_is_not_the_cookie(gw: Gw) -> None:
    """The raw cookie value is never stored as a cache key."""
    assert (await fetch(gw, "/dashboard")).status == 200
    keys = list(gw.running.gateway.runtime.auth._cache._data)
    assert keys and all(GOOD not in key for key in keys)


async def test_identity_headers_reach_the_frontend(gw: Gw) -> None:
    """A valid session sends the configured identity headers upstream."""
    response = await exchange(gw.port, get("/dashboard", f"Cookie: session={GOOD}"))
    seen = {k.lower(): v for k, v in json.loads(response.body)["headers"]}
    assert seen["x-auth-user-id"] == "u-42"
    assert seen["x-auth-user-email"] == "ada@example.com"


@pytest.mark.parametrize(
    ("claims", "expected"),
    [
        ({"id": "u1", "email": "a@b"}, {"X-Id": "u1", "X-Email": "a@b"}),
        ({"id": 7, "email": True}, {"X-Id": "7", "X-Email": "true"}),
        ({"id": 1.5, "email": False}, {"X-Id": "1.5", "X-Email": "false"}),
        ({"id": None}, {}),
        ({"id": {"a": 1}, "email": ["x"]}, {}),
        ({}, {}),
        ({"user": {"id": "nested"}}, {"X-Nested": "nested"}),
        ({"user": "flat"}, {}),
    ],
    ids=[
        "strings",
        "int-bool",
        "float-false",
        "null",
        "object-list",
        "empty",
        "dotted",
        "not-object",
    ],
)
def test_identity_from_claims(claims: dict[str, object], expected: dict[str, str]) -> None:
    """Scalars become their string form; missing, null, objects and lists give no header."""
    fields = {"X-Id": "id", "X-Email": "email", "X-Nested": "user.id"}
    assert dict(identity_from_claims(claims, fields).headers) == expected


@pytest.mark.parametrize(
    "bad", ["a\r\nb", "a\nb", "a\rb", "a\x00b"], ids=["crlf", "lf", "cr", "nul"]
)
def test_unsafe_identity_value_is_an_error(bad: str) -> None:
    """A value with CR, LF or NUL is an error (503), never a header."""
    with pytest.raises(AuthUnavailable):
        identity_from_claims({"id": bad}, {"X-Id": "id"})
