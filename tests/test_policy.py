"""Policy: require rules (403, never a loop), optional sign-in, rolling sessions."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.support.harness import GOOD, GatewayFactory, Gw
from tests.support.process import free_port
from tests.support.rawhttp import RawResponse, exchange, get

ADMIN = "admin-token-0123456789"
PLAIN = "plain-token-0123456789"
ODD = "odd-token-0123456789"
USERS: dict[str, dict[str, Any]] = {
    ADMIN: {"id": "a1", "email": "root@hamrah.app", "roles": ["user", "admin"],
            "email_verified": True, "tier": "gold", "org": {"name": "hamrah"}},
    PLAIN: {"id": "p1", "email": "ada@example.com", "roles": ["user"],
            "email_verified": False, "tier": "free", "org": {"name": "other"}},
    ODD: {"id": "o1", "email": "x@hamrah.app.evil", "roles": "admin",
          "email_verified": "true", "tier": 1},
}  # fmt: skip
RULES = [
    "/dashboard",
    {"prefix": "/admin", "require": {"roles": {"contains": "admin"}}},
    {"prefix": "/staff", "require": {"email": {"ends_with": "@hamrah.app"}}},
    {"prefix": "/verified", "require": {"email_verified": {"equals": True}}},
    {"prefix": "/paid", "require": {"tier": {"in": ["gold", "silver"]}}},
    {"prefix": "/org", "require": {"org.name": {"equals": "hamrah"}}},
    {"prefix": "/both", "require": {"roles": {"contains": "admin"},
                                    "email_verified": {"equals": True}}},
]  # fmt: skip


@pytest.fixture
async def policy_gw(gateway_factory: GatewayFactory) -> Gw:
    gw = await gateway_factory(
        protect=RULES, optional=["/", "/pricing"], public=["/login", "/static"]
    )
    gw.api.sessions.update(USERS)
    return gw


async def visit(gw: Gw, path: str, cookie: str | None, accept: str = "text/html") -> RawResponse:
    headers = [f"Accept: {accept}"]
    if cookie is not None:
        headers.append(f"Cookie: session={cookie}")
    return await exchange(gw.port, get(path, *headers))


def seen_identity(response: RawResponse) -> dict[str, str]:
    headers = json.loads(response.body)["headers"]
    return {k.lower(): v for k, v in headers if k.lower().startswith("x-auth-")}


@pytest.mark.parametrize(
    ("path", "allowed", "refused"),
    [
        ("/admin", [ADMIN], [PLAIN, ODD]),
        ("/staff/x", [ADMIN], [PLAIN, ODD]),
        ("/verified", [ADMIN], [PLAIN, ODD]),
        ("/paid", [ADMIN], [PLAIN, ODD]),
        ("/org", [ADMIN], [PLAIN, ODD]),
        ("/both", [ADMIN], [PLAIN, ODD]),
    ],
    ids=["contains", "ends_with", "equals", "in", "dotted", "all-of"],
)
async def test_require_allows_and_refuses_with_403(
    policy_gw: Gw, path: str, allowed: list[str], refused: list[str]
) -> None:
    """Each condition kind lets a matching session through and answers others 403, never 302."""
    for token in allowed:
        assert (await visit(policy_gw, path, token)).status == 200
    for token in refused:
        response = await visit(policy_gw, path, token)
        assert response.status == 403, (token, response.status)
        assert response.header("Location") is None
        assert response.header("Cache-Control") == "no-store"
        assert b"PROTECTED-CONTENT" not in response.body


async def test_missing_field_fails_the_condition(policy_gw: Gw) -> None:
    """A session whose JSON lacks the required field is refused (403)."""
    assert (await visit(policy_gw, "/org", ODD)).status == 403


async def test_forbidden_is_json_for_a_fetch(policy_gw: Gw) -> None:
    """A 403 for a non-navigation request is JSON with the request id."""
    response = await visit(policy_gw, "/admin", PLAIN, accept="application/json")
    assert response.status == 403
    body = json.loads(response.body)
    assert body["status"] == 403 and body["request_id"]


async def test_require_still_redirects_without_a_session(policy_gw: Gw) -> None:
    """Without a session a required page sends a browser to sign in as any protected page does."""
    assert (await visit(policy_gw, "/admin", None)).status == 302


@pytest.mark.parametrize(
    ("cookie", "identity"),
    [
        (None, {}),
        ("unknown-token-12345", {}),
        (GOOD, {"x-auth-user-id": "u-42", "x-auth-user-email": "ada@example.com"}),
    ],
    ids=["no-cookie", "bad-cookie", "good-cookie"],
)
@pytest.mark.parametrize("path", ["/", "/pricing/plans"])
async def test_optional_paths_pass_with_or_without_identity(
    policy_gw: Gw, path: str, cookie: str | None, identity: dict[str, str]
) -> None:
    """Optional paths always pass; only a valid session adds identity headers; never a redirect."""
    response = await visit(policy_gw, path, cookie)
    assert response.status == 200
    assert seen_identity(response) == identity


async def test_optional_path_without_cookie_makes_no_call(policy_gw: Gw) -> None:
    """An optional path with no cookie costs the auth API nothing."""
    await visit(policy_gw, "/pricing", None)
    assert policy_gw.api.calls == []


async def test_optional_path_degrades_to_anonymous_when_auth_api_is_down(
    gateway_factory: GatewayFactory,
) -> None:
    """With the auth API down an optional page is served anonymously, a protected one gets 503."""
    gw = await gateway_factory(auth=f"http://127.0.0.1:{free_port()}", optional=["/"])
    response = await visit(gw, "/pricing", GOOD)
    assert response.status == 200
    assert seen_identity(response) == {}
    assert (await visit(gw, "/dashboard", GOOD)).status == 503


async def test_forged_identity_stripped_on_optional_paths(policy_gw: Gw) -> None:
    """Client-sent identity headers never pass on an optional path, with or without a session."""
    response = await exchange(policy_gw.port, get("/pricing", "X-Auth-User-Id: root"))
    assert seen_identity(response) == {}


async def test_renewed_cookie_from_validate_reaches_the_browser(
    gateway_factory: GatewayFactory,
) -> None:
    """A Set-Cookie from the validate answer is added beside the frontend's own, not merged."""
    gw = await gateway_factory(protect=["/dashboard", "/cookies"])
    response = await visit(gw, "/cookies", "renew-token")
    assert response.status == 200
    assert response.all("Set-Cookie") == [
        "a=1; Path=/",
        "b=2; Path=/; HttpOnly",
        "session=renewed-token; Path=/; HttpOnly; Max-Age=3600",
    ]


async def test_cached_validation_does_not_replay_set_cookie(
    gateway_factory: GatewayFactory,
) -> None:
    """Only the answer to the request that validated carries the auth API's Set-Cookie."""
    gw = await gateway_factory(protect=["/dashboard", "/cookies"])
    await visit(gw, "/cookies", "renew-token")
    again = await visit(gw, "/cookies", "renew-token")
    assert "session=renewed-token; Path=/; HttpOnly; Max-Age=3600" not in again.all("Set-Cookie")
    assert len(gw.api.calls) == 1


async def test_cleared_cookie_on_401_reaches_the_browser(gw: Gw) -> None:
    """A cleared session cookie from a 401 goes out with the redirect to sign in."""
    response = await visit(gw, "/dashboard", "expired-token")
    assert response.status == 302
    assert response.all("Set-Cookie") == ["session=; Path=/; Max-Age=0"]
