"""Attack class 7, caching: nothing that depends on the session may be stored by a shared cache.

Every answer whose content depends on the session cookie carries Cache-Control: no-store or private
(and no `public`) and Vary: Cookie: the login redirect, the 401 JSON, the gateway's own errors on a
protected path, and every relayed protected page, whatever caching the frontend asked for.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from tests.support import rawhttp
from tests.support.backends import RawUpstream
from tests.support.harness import GOOD, GatewayFactory, Gw
from tests.support.process import free_port

HOST = "gateway.test"


def tokens(response: rawhttp.RawResponse, name: str) -> set[str]:
    """Lower-cased directives of a list-valued header, over all its lines."""
    return {t.strip().lower() for v in response.all(name) for t in v.split(",") if t.strip()}


def directives(response: rawhttp.RawResponse) -> set[str]:
    """Cache-Control directive names, without their arguments."""
    return {d.split("=", 1)[0].strip() for d in tokens(response, "Cache-Control")}


def assert_private(response: rawhttp.RawResponse) -> None:
    """Not storable by a shared cache, and keyed on the cookie by any cache that does store."""
    assert directives(response) & {"no-store", "private"}, response.raw_head
    vary = tokens(response, "Vary")
    assert vary & {"cookie", "*"}, response.raw_head


async def get(gw: Gw, target: str, *headers: str) -> rawhttp.RawResponse:
    return await rawhttp.exchange(gw.port, rawhttp.get(target, *headers, host=HOST))


@dataclass(frozen=True)
class Exchange:
    """One request to a gateway built with `overrides`, and the status it must get."""

    target: str
    headers: tuple[str, ...]
    status: int
    overrides: tuple[tuple[str, object], ...] = ()


def dead_port() -> str:
    return f"http://127.0.0.1:{free_port()}"


COOKIE = f"Cookie: session={GOOD}"
HTML = "Accept: text/html"
JSON = "Accept: application/json"

SESSION_DEPENDENT: dict[str, Exchange] = {
    "302-login-no-cookie": Exchange("/dashboard", (HTML,), 302),
    "302-login-denied-session": Exchange("/dashboard", (HTML, "Cookie: session=nope-123456"), 302),
    "401-json-no-cookie": Exchange("/settings", (JSON,), 401),
    "401-json-denied-session": Exchange("/settings", (JSON, "Cookie: session=api-403"), 401),
    "503-auth-api-500": Exchange("/dashboard", (HTML, "Cookie: session=api-500"), 503),
    "503-auth-api-500-json": Exchange("/dashboard", (JSON, "Cookie: session=api-500"), 503),
    "503-auth-api-not-json": Exchange("/dashboard", ("Cookie: session=api-nonjson",), 503),
    "503-auth-api-refused": Exchange("/dashboard", (COOKIE,), 503, (("auth", "dead"),)),
    "400-duplicate-session-cookie": Exchange(
        "/dashboard", (f"Cookie: session={GOOD}; session=x",), 400
    ),
    "502-protected-frontend-down": Exchange("/dashboard", (COOKIE,), 502, (("upstream", "dead"),)),
    "200-relayed-protected-page": Exchange("/dashboard", (COOKIE,), 200),
    "302-relayed-frontend-redirect": Exchange(
        "/redirect", (COOKIE,), 302, (("protect", ["/dashboard", "/redirect"]),)
    ),
    "200-relayed-page-session-without-fields": Exchange(
        "/admin", ("Cookie: session=api-empty-object",), 200
    ),
}


def assert_cache_safe(response: rawhttp.RawResponse) -> None:
    assert_private(response)
    assert "public" not in directives(response), response.raw_head


@pytest.mark.parametrize("case", SESSION_DEPENDENT.values(), ids=SESSION_DEPENDENT.keys())
async def test_session_dependent_answer_is_private_and_varies_on_cookie(
    gateway_factory: GatewayFactory, case: Exchange
) -> None:
    """Every answer that depends on the session carries no-store/private and Vary: Cookie."""
    overrides = {k: dead_port() if v == "dead" else v for k, v in case.overrides}
    gw = await gateway_factory(**overrides)
    response = await get(gw, case.target, *case.headers)
    assert response.status == case.status
    assert_cache_safe(response)


async def test_page_served_from_the_auth_cache_is_private_and_varies_on_cookie(
    gateway_factory: GatewayFactory,
) -> None:
    """A protected page whose session came from the auth cache is as private as the first."""
    gw = await gateway_factory()
    await get(gw, "/profile", COOKIE)
    response = await get(gw, "/profile", COOKIE)
    assert response.status == 200
    assert len(gw.api.calls) == 1
    assert_cache_safe(response)


def page(*headers: str, status: str = "200 OK", body: bytes = b"secret page") -> bytes:
    lines = [f"HTTP/1.1 {status}", *headers, f"Content-Length: {len(body)}", "", ""]
    return "\r\n".join(lines).encode() + body


# What the frontend says about caching a protected page; the gateway must make each private.
FRONTEND_CACHING: dict[str, bytes] = {
    "public-max-age": page("Cache-Control: public, max-age=600"),
    "public-max-age-split-lines": page("Cache-Control: public", "Cache-Control: max-age=600"),
    "public-upper-case": page("Cache-Control: PUBLIC, MAX-AGE=600"),
    "max-age-public-order": page("Cache-Control: max-age=600, public"),
    "public-s-maxage": page("Cache-Control: public, s-maxage=3600, max-age=600"),
    "s-maxage-only": page("Cache-Control: s-maxage=3600"),
    "max-age-only": page("Cache-Control: max-age=600"),
    "immutable": page("Cache-Control: public, max-age=31536000, immutable"),
    "no-cache-control": page(),
    "expires-only": page("Expires: Thu, 01 Jan 2099 00:00:00 GMT"),
    "last-modified-only": page("Last-Modified: Thu, 01 Jan 2015 00:00:00 GMT"),
    "no-cache": page("Cache-Control: no-cache"),
    "already-private": page("Cache-Control: private, max-age=60"),
    "already-no-store": page("Cache-Control: no-store"),
    "vary-accept-encoding": page("Cache-Control: public, max-age=600", "Vary: Accept-Encoding"),
    "vary-two-lines": page("Vary: Accept-Encoding", "Vary: Accept-Language"),
    "vary-star": page("Cache-Control: public, max-age=600", "Vary: *"),
    "vary-cookie-already": page("Vary: Cookie", "Cache-Control: max-age=600"),
    "redirect-public": page(
        "Location: /elsewhere", "Cache-Control: public, max-age=600", status="301 Moved"
    ),
    "not-found-public": page("Cache-Control: public, max-age=600", status="404 Not Found"),
    "server-error-public": page("Cache-Control: public", status="500 Internal Server Error"),
    "chunked-public": (
        b"HTTP/1.1 200 OK\r\nCache-Control: public, max-age=600\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n6\r\nsecret\r\n0\r\n\r\n"
    ),
}


@pytest.mark.parametrize("answer", FRONTEND_CACHING.values(), ids=FRONTEND_CACHING.keys())
async def test_relayed_protected_page_is_private_whatever_the_frontend_says(
    gateway_factory: GatewayFactory, raw_upstream: tuple[RawUpstream, int], answer: bytes
) -> None:
    """A protected page is relayed private, its `public` removed rather than left beside it."""
    upstream, port = raw_upstream
    upstream.response = answer
    gw = await gateway_factory(upstream=f"http://127.0.0.1:{port}")
    response = await get(gw, "/dashboard", f"Cookie: session={GOOD}")
    assert response.status == int(answer.split(b" ")[1]), response.raw_head
    assert_private(response)
    assert "public" not in directives(response), response.raw_head
