"""The demo auth API and demo frontend, over real loopback HTTP; the frontend calls the API live."""

from __future__ import annotations

import asyncio
import io
import socket
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import jwt
import pytest
from aiohttp.test_utils import TestClient
from aiohttp.web import Application, Request
from cryptography.hazmat.primitives.asymmetric import ec
from pytest_aiohttp import AiohttpClient, AiohttpServer

from gateway.assertion import JWKS_PATH
from gateway.demo import DEMO_COOKIE, build_auth_api, build_frontend
from tests.support.browser import DemoStack, demo_stack

Client = TestClient[Request, Application]
# A client built around an already-started server carries no app of its own.
ServerClient = TestClient[Request, None]
IDENTITY = {"X-Auth-User-Id": "usr_42", "X-Auth-User-Email": "ada@example.com"}
VALIDATE = "/api/auth/sessions/validate"


@pytest.fixture
async def api(aiohttp_client: AiohttpClient) -> Client:
    return await aiohttp_client(build_auth_api())


@pytest.fixture
async def stack(
    aiohttp_client: AiohttpClient, aiohttp_server: AiohttpServer
) -> tuple[Client, ServerClient]:
    """(frontend client, API client); the frontend reaches the API over its own socket."""
    api_server = await aiohttp_server(build_auth_api())
    frontend = await aiohttp_client(build_frontend(str(api_server.make_url(""))))
    api_client: ServerClient = await aiohttp_client(api_server)
    return frontend, api_client


async def sign_in(frontend: Client, email: str = "ada@example.com", next_: str = "") -> str:
    resp = await frontend.post(
        "/login", data={"email": email, "name": "Ada", "next": next_}, allow_redirects=False
    )
    assert resp.status == 303
    return resp.cookies[DEMO_COOKIE].value


async def validate(api_client: ServerClient, token: str) -> aiohttp.ClientResponse:
    return await api_client.get(VALIDATE, headers={"Cookie": f"{DEMO_COOKIE}={token}"})


async def test_login_sets_cookie_that_validate_accepts(stack: tuple[Client, ServerClient]) -> None:
    """Signing in via the frontend sets an HttpOnly Lax session cookie the API accepts."""
    frontend, api_client = stack
    resp = await frontend.post(
        "/login",
        data={"email": "Ada@Example.com", "name": "Ada", "next": "/dashboard"},
        allow_redirects=False,
    )
    assert resp.status == 303
    assert resp.headers["Location"] == "/dashboard"
    morsel = resp.cookies[DEMO_COOKIE]
    assert morsel["path"] == "/"
    assert morsel["httponly"]
    assert morsel["samesite"] == "Lax"
    resp = await validate(api_client, morsel.value)
    assert resp.status == 200
    user = await resp.json()
    assert user["email"] == "ada@example.com"
    assert user["name"] == "Ada"
    assert user["roles"] == ["user"]
    assert user["email_verified"] is True
    assert user["id"]


async def test_create_session_gives_stable_ids_and_admin_role(api: Client) -> None:
    """The same email always maps to the same user id; admin@ emails also get the admin role."""
    first = await api.post("/api/auth/sessions", json={"email": "admin@example.com"})
    second = await api.post("/api/auth/sessions", json={"email": "admin@example.com", "name": "A"})
    assert first.status == second.status == 201
    one, two = await first.json(), await second.json()
    assert one["token"] != two["token"]
    assert one["user"]["id"] == two["user"]["id"]
    assert one["user"]["roles"] == ["user", "admin"]
    assert one["user"]["name"] == "admin"


@pytest.mark.parametrize(
    "body",
    [{}, {"email": "not-an-email"}, {"email": 7}, {"email": "a@b.c", "name": ["x"]}, ["a@b.c"]],
)
async def test_create_session_rejects_bad_bodies(api: Client, body: object) -> None:
    """Session creation answers 400 to a missing or malformed email or name."""
    resp = await api.post("/api/auth/sessions", json=body)
    assert resp.status == 400
    assert "error" in await resp.json()


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Cookie": f"{DEMO_COOKIE}=not-a-real-token"},
        {"Cookie": f"{DEMO_COOKIE}="},
        {"Cookie": "other=1"},
    ],
)
async def test_validate_rejects_missing_or_bad_cookie(api: Client, headers: dict[str, str]) -> None:
    """Validate answers 401 with an error object when the session cookie is missing or unknown."""
    resp = await api.get(VALIDATE, headers=headers)
    assert resp.status == 401
    assert await resp.json() == {"error": "invalid session"}


async def test_validate_ignores_everything_but_the_cookie(api: Client) -> None:
    """A valid token offered as a bearer header or query parameter is not a session."""
    created = await api.post("/api/auth/sessions", json={"email": "ada@example.com"})
    token = (await created.json())["token"]
    resp = await api.get(VALIDATE, headers={"Authorization": f"Bearer {token}"})
    assert resp.status == 401
    resp = await api.get(VALIDATE, params={DEMO_COOKIE: token})
    assert resp.status == 401


@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_logout_ends_session_and_clears_cookie(
    stack: tuple[Client, ServerClient], method: str
) -> None:
    """Logging out ends the session at the API, expires the cookie and redirects home."""
    frontend, api_client = stack
    token = await sign_in(frontend)
    resp = await frontend.request(
        method, "/logout", headers={"Cookie": f"{DEMO_COOKIE}={token}"}, allow_redirects=False
    )
    assert resp.status == 303
    assert resp.headers["Location"] == "/"
    morsel = resp.cookies[DEMO_COOKIE]
    assert morsel.value == ""
    assert morsel["max-age"] == "0"
    assert (await validate(api_client, token)).status == 401


async def test_end_session_is_idempotent(api: Client) -> None:
    """Ending a session that does not exist still answers 204."""
    resp = await api.delete("/api/auth/sessions/current", headers={"Cookie": f"{DEMO_COOKIE}=gone"})
    assert resp.status == 204


@pytest.mark.parametrize(
    ("next_", "expected"),
    [
        ("/dashboard?tab=2", "/dashboard?tab=2"),
        ("/settings", "/settings"),
        ("/dashboard/a%2Fb?q=x%20y", "/dashboard/a%2Fb?q=x%20y"),
        ("", "/dashboard"),
        ("//evil.com", "/dashboard"),
        ("/\\evil.com", "/dashboard"),
        ("https://evil.com", "/dashboard"),
        ("javascript:alert(1)", "/dashboard"),
        ("/%09/evil", "/dashboard"),
        ("/\t/evil", "/dashboard"),
        ("/%2F/evil.com", "/dashboard"),
        ("/%5Cevil.com", "/dashboard"),
        ("dashboard", "/dashboard"),
        ("/dash board", "/dashboard"),
    ],
)
async def test_login_redirects_only_to_safe_next(
    stack: tuple[Client, ServerClient], next_: str, expected: str
) -> None:
    """After sign-in, next is followed only when it is a same-origin path; else /dashboard."""
    frontend, _ = stack
    resp = await frontend.post(
        "/login", data={"email": "ada@example.com", "next": next_}, allow_redirects=False
    )
    assert resp.status == 303
    assert resp.headers["Location"] == expected


async def test_login_form_carries_next_escaped(stack: tuple[Client, ServerClient]) -> None:
    """The sign-in form keeps the next query parameter in a hidden field, HTML-escaped."""
    frontend, _ = stack
    resp = await frontend.get("/login", params={"next": '/dashboard?a=1&b="x"'})
    assert resp.status == 200
    page = await resp.text()
    assert 'name="next" value="/dashboard?a=1&amp;b=&quot;x&quot;"' in page
    assert 'action="/login"' in page


async def test_login_without_email_shows_form_error(stack: tuple[Client, ServerClient]) -> None:
    """Submitting no email re-renders the form with a 400 and sets no cookie."""
    frontend, _ = stack
    resp = await frontend.post("/login", data={"email": "", "next": "/x"}, allow_redirects=False)
    assert resp.status == 400
    assert DEMO_COOKIE not in resp.cookies
    assert 'role="alert"' in await resp.text()


async def test_login_with_api_down_answers_502(aiohttp_client: AiohttpClient) -> None:
    """When the auth API cannot be reached, sign-in re-renders the form with a 502."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    frontend = await aiohttp_client(build_frontend(f"http://127.0.0.1:{port}"))
    resp = await frontend.post("/login", data={"email": "ada@example.com"}, allow_redirects=False)
    assert resp.status == 502
    assert DEMO_COOKIE not in resp.cookies
    assert "unavailable" in await resp.text()


def test_build_frontend_rejects_non_http_api_url() -> None:
    """A relative or non-http API URL is refused when the app is built, not on first sign-in."""
    with pytest.raises(ValueError, match="api_url"):
        build_frontend("127.0.0.1:8787")


async def test_dashboard_shows_identity_headers(stack: tuple[Client, ServerClient]) -> None:
    """The dashboard renders the gateway's identity headers, escaped, and is never cached."""
    frontend, _ = stack
    headers = {"X-Auth-User-Id": "usr_<1>", "X-Auth-User-Email": "ada@example.com"}
    resp = await frontend.get("/dashboard", headers=headers)
    assert resp.status == 200
    assert resp.headers["Cache-Control"] == "no-store"
    page = await resp.text()
    assert "usr_&lt;1&gt;" in page
    assert "ada@example.com" in page
    assert "hamrah demo" in page
    assert 'href="/dashboard/live"' in page
    assert 'action="/logout"' in page


@pytest.mark.parametrize("path", ["/dashboard", "/settings", "/profile", "/dashboard/data.json"])
async def test_protected_pages_refuse_requests_without_identity(
    stack: tuple[Client, ServerClient], path: str
) -> None:
    """Protected pages answer 401 when the gateway's identity headers are absent."""
    frontend, _ = stack
    resp = await frontend.get(path)
    assert resp.status == 401


@pytest.mark.parametrize("path", ["/settings", "/profile"])
async def test_settings_and_profile_show_user(
    stack: tuple[Client, ServerClient], path: str
) -> None:
    """Settings and profile pages name the signed-in user."""
    frontend, _ = stack
    resp = await frontend.get(path, headers=IDENTITY)
    assert resp.status == 200
    assert "ada@example.com" in await resp.text()


async def test_landing_shows_signed_in_state(stack: tuple[Client, ServerClient]) -> None:
    """The landing page links to the app and says who is signed in when told."""
    frontend, _ = stack
    anonymous = await (await frontend.get("/")).text()
    assert "Not signed in" in anonymous
    for href in ('href="/dashboard"', 'href="/settings"', 'href="/login"'):
        assert href in anonymous
    signed_in = await (await frontend.get("/", headers=IDENTITY)).text()
    assert "signed in as <strong>ada@example.com</strong>" in signed_in


async def test_data_json_returns_user_and_items(stack: tuple[Client, ServerClient]) -> None:
    """data.json returns the asserted user and a list of items for fetch() callers."""
    frontend, _ = stack
    resp = await frontend.get("/dashboard/data.json", headers=IDENTITY)
    assert resp.status == 200
    data = await resp.json()
    assert data["user"] == {"id": "usr_42", "email": "ada@example.com"}
    assert isinstance(data["items"], list)
    assert data["items"]


async def test_live_page_has_ws_and_sse_hooks(stack: tuple[Client, ServerClient]) -> None:
    """The live page carries the element ids and endpoints its script and tests rely on."""
    frontend, _ = stack
    page = await (await frontend.get("/dashboard/live", headers=IDENTITY)).text()
    for needle in (
        'id="ws-messages"',
        'id="sse-messages"',
        'id="ws-state"',
        'id="sse-state"',
        "/dashboard/ws",
        "/dashboard/events",
    ):
        assert needle in page


async def test_sse_sends_first_event_immediately(stack: tuple[Client, ServerClient]) -> None:
    """The event stream is text/event-stream and its first tick arrives without waiting."""
    frontend, _ = stack
    async with frontend.get("/dashboard/events", headers=IDENTITY) as resp:
        assert resp.status == 200
        assert resp.content_type == "text/event-stream"
        first = await asyncio.wait_for(resp.content.readuntil(b"\n\n"), timeout=0.9)
    assert first == b"data: tick 1\n\n"


async def test_websocket_greets_echoes_and_ticks(stack: tuple[Client, ServerClient]) -> None:
    """The WebSocket greets the user by email, echoes text and binary, and sends ticks."""
    frontend, _ = stack
    async with frontend.ws_connect("/dashboard/ws", headers=IDENTITY) as ws:
        assert await ws.receive_str(timeout=2) == "hello ada@example.com"
        await ws.send_str("ping")
        await ws.send_bytes(b"\x00\x01")
        received: list[str | bytes] = []
        while len(received) < 3:
            msg = await ws.receive(timeout=3)
            received.append(msg.data)
    assert received[:2] == ["ping", b"\x00\x01"]
    assert received[2] == "tick 1"


@pytest.mark.parametrize(
    "factory",
    [build_auth_api, lambda: build_frontend("http://127.0.0.1:1")],
    ids=["api", "frontend"],
)
async def test_healthz(aiohttp_client: AiohttpClient, factory: Callable[[], Application]) -> None:
    """Both demo apps answer /healthz with 200 ok."""
    resp = await (await aiohttp_client(factory())).get("/healthz")
    assert resp.status == 200
    assert await resp.text() == "ok"


# ---------------------------------------------------------------------------------------------
# The frontend checking the gateway's signature (as `hamrah-gateway demo` runs it)
# ---------------------------------------------------------------------------------------------


@pytest.fixture
async def signed() -> AsyncIterator[DemoStack]:
    """The demo as the demo command runs it: the frontend verifies the gateway's assertion."""
    async with demo_stack() as running:
        yield running


async def signed_in_cookie(stack: DemoStack, email: str = "ada@example.com") -> str:
    """Sign in through the gateway; the session cookie's value."""
    async with (
        aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as session,
        session.post(
            stack.url + "/login", data={"email": email, "name": "Ada"}, allow_redirects=False
        ) as response,
    ):
        assert response.status == 303
        return response.cookies[DEMO_COOKIE].value


async def get_page(url: str, headers: dict[str, str]) -> tuple[int, str]:
    async with (
        aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as session,
        session.get(url, headers=headers, allow_redirects=False) as response,
    ):
        return response.status, await response.text()


async def test_dashboard_through_the_gateway_is_verified_by_signature(
    signed: DemoStack, log_output: io.StringIO
) -> None:
    """Signed-in pages through the gateway show the identity verified by its signature; the
    frontend fetched the JWKS through the gateway once and reuses it."""
    cookie = {"Cookie": f"{DEMO_COOKIE}={await signed_in_cookie(signed)}"}
    for path in ("/dashboard", "/profile", "/dashboard", "/settings"):
        status, page = await get_page(signed.url + path, cookie)
        assert status == 200, page
        assert "ada@example.com" in page
    status, page = await get_page(signed.url + "/dashboard", cookie)
    assert "identity verified by signature" in page
    fetches = [line for line in log_output.getvalue().splitlines() if JWKS_PATH in line]
    assert len(fetches) == 1, fetches


@pytest.mark.parametrize("path", ["/dashboard", "/settings", "/profile", "/dashboard/data.json"])
async def test_forged_identity_headers_sent_to_the_frontend_directly_are_refused(
    signed: DemoStack, path: str
) -> None:
    """With the signature checked, identity headers alone are refused (401), and the landing
    page does not believe them either."""
    direct = f"http://127.0.0.1:{signed.frontend_port}"
    status, page = await get_page(direct + path, IDENTITY)
    assert status == 401
    assert "ada@example.com" not in page
    status, page = await get_page(direct + "/", IDENTITY)
    assert status == 200
    assert "You are not signed in" in page


def _forge(stack: DemoStack, change: str) -> str:
    """A token as the gateway would sign it, with one thing wrong (or none, for "none")."""
    assertion = stack.config.assertion
    assert assertion is not None
    now = int(time.time())
    claims: dict[str, object] = {
        "iss": assertion.issuer,
        "aud": assertion.audience,
        "sub": "usr_42",
        "email": "ada@example.com",
        "iat": now,
        "exp": now + 60,
    }
    key: Any = assertion.keys[0].private
    kid, algorithm = assertion.keys[0].kid, "ES256"
    if change == "other-key":
        key = ec.generate_private_key(ec.SECP256R1())
    elif change == "alg-none":
        key, algorithm = "", "none"
    elif change == "unknown-kid":
        kid = "not-a-published-kid"
    elif change == "expired":
        claims |= {"iat": now - 120, "exp": now - 60}
    elif change != "none":
        field, _, value = change.partition("=")
        if value:
            claims[field] = value
        else:
            del claims[field]
    return jwt.encode(claims, key, algorithm=algorithm, headers={"kid": kid})


@pytest.mark.parametrize(
    ("change", "status"),
    [
        ("none", 200),
        ("other-key", 401),
        ("alg-none", 401),
        ("unknown-kid", 401),
        ("expired", 401),
        ("aud=https://another.app", 401),
        ("iss=someone-else", 401),
        ("sub", 401),
        ("exp", 401),
    ],
)
async def test_frontend_accepts_only_tokens_the_gateway_could_have_signed(
    signed: DemoStack, change: str, status: int
) -> None:
    """A token sent to the frontend directly passes only when signed with a published key and
    its iss, aud and exp hold; anything else is refused."""
    headers = {**IDENTITY, "X-Gateway-Assertion": _forge(signed, change)}
    direct = f"http://127.0.0.1:{signed.frontend_port}"
    got, page = await get_page(direct + "/dashboard", headers)
    assert got == status, page
    assert ("identity verified by signature" in page) is (status == 200)
