"""Attack class 2, header trust: no client header may pose as something the gateway vouches for.

Identity headers, forwarding headers, URL-rewriting headers and hop-by-hop headers from the client
are dropped or replaced before the frontend sees the request; the gateway's own headers survive
every trick (Connection naming them, case and underscore spellings, duplicates).
"""

from __future__ import annotations

import re
from typing import Any

import aiohttp
import pytest

from tests.support import rawhttp
from tests.support.harness import GOOD, GatewayFactory, Gw

EVIL = "evil-spoofed-value"
IDENTITY = ("x-auth-user-id", "x-auth-user-email")
GOOD_IDENTITY = {"x-auth-user-id": ["u-42"], "x-auth-user-email": ["ada@example.com"]}
SANE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
HOST = "gateway.test"


def key(name: str) -> str:
    """A header name as permissive frameworks read it: case-folded, '_' read as '-'."""
    return name.lower().replace("_", "-")


def received(entry: dict[str, Any], name: str) -> list[str]:
    """Every value the frontend got for a header, in any spelling of its name."""
    return [v for k, v in entry["headers"] if key(k) == key(name)]


def received_names(entry: dict[str, Any]) -> set[str]:
    return {key(k) for k, _ in entry["headers"]}


async def send(
    gw: Gw, target: str, *headers: str, method: str = "GET", body: bytes = b""
) -> tuple[rawhttp.RawResponse, dict[str, Any] | None]:
    """Send exact bytes; return the answer and what the frontend saw for it (None: not reached)."""
    before = len(gw.seen.seen)
    response = await rawhttp.exchange(
        gw.port, rawhttp.get(target, *headers, host=HOST, method=method) + body, method
    )
    entry = gw.seen.seen[-1] if len(gw.seen.seen) > before else None
    return response, entry


async def reach(gw: Gw, target: str, *headers: str) -> dict[str, Any]:
    """Send a request that must be relayed, and return what the frontend saw."""
    response, entry = await send(gw, target, *headers)
    assert response.status == 200, response.raw_head
    assert entry is not None
    return entry


def identity_of(entry: dict[str, Any]) -> dict[str, list[str]]:
    return {name: received(entry, name) for name in IDENTITY if received(entry, name)}


# Where the spoofed copies are sent: (path, cookie header lines, identity the frontend must get).
SCENARIOS: dict[str, tuple[str, tuple[str, ...], dict[str, list[str]]]] = {
    "public": ("/hello", (), {}),
    "public-with-valid-session": ("/hello", (f"Cookie: session={GOOD}",), {}),
    "public-exception": ("/dashboard/public/page", (), {}),
    "public-exception-with-session": ("/dashboard/public", (f"Cookie: session={GOOD}",), {}),
    "protected": ("/dashboard", (f"Cookie: session={GOOD}",), GOOD_IDENTITY),
    "protected-deep": ("/settings/a/b?x=1", (f"Cookie: session={GOOD}",), GOOD_IDENTITY),
    "protected-session-json-lacks-fields": ("/profile", ("Cookie: session=api-empty-object",), {}),
}

SPOOFS: dict[str, tuple[str, ...]] = {
    "canonical": (f"X-Auth-User-Id: {EVIL}", f"X-Auth-User-Email: {EVIL}@evil.test"),
    "lower-case": (f"x-auth-user-id: {EVIL}",),
    "upper-case": (f"X-AUTH-USER-EMAIL: {EVIL}",),
    "mixed-case": (f"x-AuTh-UsEr-Id: {EVIL}",),
    "underscores": (f"X_Auth_User_Id: {EVIL}", f"x_auth_user_email: {EVIL}"),
    "mixed-underscore-dash": (f"X-Auth_User-Id: {EVIL}",),
    "duplicates": (f"X-Auth-User-Id: {EVIL}-1", f"X-Auth-User-Id: {EVIL}-2"),
    "duplicates-mixed-spellings": (
        f"X-Auth-User-Email: {EVIL}-1",
        f"x_auth_user_email: {EVIL}-2",
        f"X-AUTH-USER-EMAIL: {EVIL}-3",
    ),
    "empty-value": ("X-Auth-User-Id:", "X-Auth-User-Email: "),
    "admin-claim": (f"X-Auth-User-Id: admin-{EVIL}", "X-Auth-User-Email: root@hamrah.app"),
}


@pytest.mark.parametrize("spoof", SPOOFS.values(), ids=SPOOFS.keys())
@pytest.mark.parametrize("scenario", SCENARIOS.values(), ids=SCENARIOS.keys())
async def test_client_identity_headers_never_reach_the_frontend(
    gw: Gw,
    scenario: tuple[str, tuple[str, ...], dict[str, list[str]]],
    spoof: tuple[str, ...],
) -> None:
    """Client copies of identity headers (any spelling, duplicated) are dropped on every path."""
    path, cookies, expected = scenario
    entry = await reach(gw, path, *cookies, *spoof)
    assert identity_of(entry) == expected
    assert not any(EVIL in v or v == "root@hamrah.app" for _, v in entry["headers"])


async def test_trusted_proxy_cannot_set_identity_either(gateway_factory: GatewayFactory) -> None:
    """Even a trusted proxy's identity headers are dropped: only the auth API names the user."""
    gw = await gateway_factory(trusted_proxies=["127.0.0.1/32"])
    entry = await reach(gw, "/hello", f"X-Auth-User-Id: {EVIL}", f"X_Auth_User_Email: {EVIL}")
    assert identity_of(entry) == {}
    entry = await reach(gw, "/dashboard", f"Cookie: session={GOOD}", f"x-auth-user-id: {EVIL}")
    assert identity_of(entry) == GOOD_IDENTITY


async def test_websocket_handshake_carries_only_the_gateways_identity(gw: Gw) -> None:
    """A spoofed identity header on a WebSocket upgrade is dropped; the validated one is sent."""
    headers = {"Cookie": f"session={GOOD}", "X-Auth-User-Id": EVIL, "X_Auth_User_Email": EVIL}
    async with (
        aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as session,
        session.ws_connect(f"{gw.url}/dashboard/ws", headers=headers) as ws,
    ):
        greeting = await ws.receive(timeout=5)
        assert greeting.data == "hello u-42"
    entry = gw.seen.seen[-1]
    assert identity_of(entry) == GOOD_IDENTITY
    assert received(entry, "Upgrade") == ["websocket"]


URL_OVERRIDES: dict[str, tuple[str, ...]] = {
    "x-original-url": ("X-Original-URL: /admin",),
    "x-rewrite-url": ("X-Rewrite-URL: /admin",),
    "lower-case": ("x-original-url: /admin", "x-rewrite-url: /admin"),
    "underscores": ("X_Original_URL: /admin", "X_Rewrite_URL: /admin"),
    "duplicates": ("X-Original-URL: /admin", "X-Original-URL: /settings"),
    "absolute": ("X-Original-URL: http://evil.test/admin",),
}
URL_OVERRIDE_PATHS: dict[str, tuple[str, tuple[str, ...]]] = {
    "public": ("/hello", ()),
    "public-exception": ("/dashboard/public", ()),
    "protected": ("/dashboard", (f"Cookie: session={GOOD}",)),
}


@pytest.mark.parametrize("overrides", URL_OVERRIDES.values(), ids=URL_OVERRIDES.keys())
@pytest.mark.parametrize("where", URL_OVERRIDE_PATHS.values(), ids=URL_OVERRIDE_PATHS.keys())
async def test_url_override_headers_are_removed_on_every_path(
    gw: Gw, where: tuple[str, tuple[str, ...]], overrides: tuple[str, ...]
) -> None:
    """X-Original-URL and X-Rewrite-URL never reach the frontend, and do not change the path."""
    path, cookies = where
    entry = await reach(gw, path, *cookies, *overrides)
    names = received_names(entry)
    assert "x-original-url" not in names
    assert "x-rewrite-url" not in names
    assert entry["raw_path"] == path


@pytest.mark.parametrize("overrides", URL_OVERRIDES.values(), ids=URL_OVERRIDES.keys())
async def test_url_override_headers_do_not_unlock_a_protected_path(
    gw: Gw, overrides: tuple[str, ...]
) -> None:
    """A protected path with a rewrite header pointing at a public page is still denied."""
    swapped = tuple(h.replace("/admin", "/hello").replace("/settings", "/hello") for h in overrides)
    response, entry = await send(gw, "/admin", "Accept: text/html", *swapped)
    assert response.status == 302
    assert entry is None


# Connection naming headers the gateway sets: the gateway still sets them.
CONNECTION_TRICKS: dict[str, tuple[str, ...]] = {
    "close-and-identity-id": ("Connection: close, X-Auth-User-Id",),
    "identity-email": ("Connection: X-Auth-User-Email",),
    "both-identity": ("Connection: X-Auth-User-Id, X-Auth-User-Email",),
    "identity-underscore": ("Connection: x_auth_user_id",),
    "x-forwarded-for": ("Connection: X-Forwarded-For",),
    "x-forwarded-for-with-value": ("Connection: X-Forwarded-For", "X-Forwarded-For: 1.2.3.4"),
    "x-request-id": ("Connection: X-Request-ID",),
    "x-request-id-with-value": ("Connection: X-Request-ID", "X-Request-ID: client-id-1"),
    "forwarded-proto-host": ("Connection: X-Forwarded-Proto, X-Forwarded-Host",),
    "host": ("Connection: Host",),
    "everything": (
        "Connection: keep-alive, X-Auth-User-Id, X-Auth-User-Email, X-Forwarded-For,"
        " X-Forwarded-Proto, X-Forwarded-Host, X-Request-ID, Host",
    ),
    "two-connection-headers": ("Connection: X-Auth-User-Id", "Connection: X-Forwarded-For"),
}


@pytest.mark.parametrize("trick", CONNECTION_TRICKS.values(), ids=CONNECTION_TRICKS.keys())
async def test_connection_cannot_remove_gateway_set_headers(gw: Gw, trick: tuple[str, ...]) -> None:
    """Headers named in Connection are dropped from the client's, never from the gateway's own."""
    entry = await reach(gw, "/dashboard", f"Cookie: session={GOOD}", *trick)
    assert identity_of(entry) == GOOD_IDENTITY
    assert received(entry, "X-Forwarded-For") == ["127.0.0.1"]
    assert received(entry, "X-Forwarded-Proto") == ["http"]
    assert received(entry, "X-Forwarded-Host") == [HOST]
    assert received(entry, "Host") == [HOST]
    request_ids = received(entry, "X-Request-ID")
    assert len(request_ids) == 1
    assert SANE_REQUEST_ID.match(request_ids[0])
    assert request_ids == [dict(gw.api.calls[-1]["headers"])["X-Request-ID"]]


# Hop-by-hop headers: (header lines sent, names that must not reach the frontend).
HOP_BY_HOP: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "keep-alive": (("Keep-Alive: timeout=5, max=1000",), ("keep-alive",)),
    "proxy-connection": (("Proxy-Connection: keep-alive",), ("proxy-connection",)),
    "proxy-authenticate": (('Proxy-Authenticate: Basic realm="x"',), ("proxy-authenticate",)),
    "proxy-authorization": (("Proxy-Authorization: Basic dXNlcjpwYXNz",), ("proxy-authorization",)),
    "te": (("TE: trailers, deflate",), ("te",)),
    "trailer": (("Trailer: X-Checksum",), ("trailer",)),
    "upgrade-h2c": (
        ("Connection: Upgrade, HTTP2-Settings", "Upgrade: h2c", "HTTP2-Settings: AAMAAABkAAQ"),
        ("upgrade", "http2-settings"),
    ),
    "named-in-connection": (("Connection: X-Hop-Secret", "X-Hop-Secret: 1"), ("x-hop-secret",)),
    "named-in-connection-case": (
        ("Connection: x-HOP-secret", "X-Hop-Secret: 1"),
        ("x-hop-secret",),
    ),
    "named-in-second-connection": (
        ("Connection: keep-alive", "Connection: X-Hop-A, X-Hop-B", "X-Hop-A: 1", "X-Hop-B: 2"),
        ("x-hop-a", "x-hop-b"),
    ),
    "named-with-spaces": (
        ("Connection:  X-Hop-A ,X-Hop-B  ", "X-Hop-A: 1", "X-Hop-B: 2"),
        ("x-hop-a", "x-hop-b"),
    ),
    "underscore-spellings": (
        ("Proxy_Authorization: Basic dXNlcjpwYXNz", "Keep_Alive: 5", "Proxy_Connection: close"),
        ("proxy-authorization", "keep-alive", "proxy-connection"),
    ),
}
HOP_PATHS: dict[str, tuple[str, tuple[str, ...]]] = {
    "public": ("/hello", ()),
    "protected": ("/dashboard", (f"Cookie: session={GOOD}",)),
}


@pytest.mark.parametrize("hop", HOP_BY_HOP.values(), ids=HOP_BY_HOP.keys())
@pytest.mark.parametrize("where", HOP_PATHS.values(), ids=HOP_PATHS.keys())
async def test_hop_by_hop_headers_are_dropped(
    gw: Gw, where: tuple[str, tuple[str, ...]], hop: tuple[tuple[str, ...], tuple[str, ...]]
) -> None:
    """Hop-by-hop headers, and every header named in Connection, stop at the gateway."""
    path, cookies = where
    lines, dropped = hop
    response, entry = await send(gw, path, *cookies, *lines)
    assert response.status == 200, response.raw_head
    assert entry is not None
    names = received_names(entry)
    for name in dropped:
        assert name not in names, name
    sent_tokens = {
        t.strip().lower()
        for line in lines
        if line.lower().startswith("connection:")
        for t in line.partition(":")[2].split(",")
    }
    for value in received(entry, "Connection"):
        assert not {t.strip().lower() for t in value.split(",")} & (sent_tokens - {"keep-alive"})


@pytest.mark.parametrize("method", ["POST", "PUT"])
async def test_websocket_upgrade_on_a_non_get_is_dropped(gw: Gw, method: str) -> None:
    """Upgrade: websocket on a request that cannot be a handshake is a plain hop-by-hop header."""
    response, entry = await send(
        gw,
        "/hello",
        "Connection: Upgrade",
        "Upgrade: websocket",
        "Content-Length: 0",
        method=method,
    )
    assert response.status == 200, response.raw_head
    assert entry is not None
    assert "upgrade" not in received_names(entry)


async def test_client_transfer_encoding_is_reframed_not_forwarded(gw: Gw) -> None:
    """A chunked upload arrives whole; the client's Transfer-Encoding line is not passed on."""
    body = b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
    response, entry = await send(
        gw, "/hello", "Transfer-Encoding: chunked", "X-Probe: 1", method="POST", body=body
    )
    assert response.status == 200
    assert entry is not None
    assert entry["body_length"] == len(b"hello world")
    assert len(received(entry, "Transfer-Encoding")) <= 1
    assert received(entry, "Content-Length") == [] or received(entry, "Transfer-Encoding") == []


async def test_websocket_upgrade_is_kept(gw: Gw) -> None:
    """Upgrade: websocket is the one upgrade the gateway passes on."""
    async with (
        aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as session,
        session.ws_connect(f"{gw.url}/ws") as ws,
    ):
        greeting = await ws.receive(timeout=5)
        assert greeting.data == "hello anonymous"
    entry = gw.seen.seen[-1]
    assert received(entry, "Upgrade") == ["websocket"]


FORGED_XFF: dict[str, tuple[str, ...]] = {
    "single": ("X-Forwarded-For: 1.2.3.4",),
    "chain": ("X-Forwarded-For: 1.2.3.4, 5.6.7.8",),
    "two-headers": ("X-Forwarded-For: 1.2.3.4", "X-Forwarded-For: 5.6.7.8"),
    "lower-case": ("x-forwarded-for: 1.2.3.4",),
    "underscores": ("X_Forwarded_For: 1.2.3.4",),
    "mixed-spellings": ("X-Forwarded-For: 1.2.3.4", "x_forwarded_for: 5.6.7.8"),
    "loopback-claim": ("X-Forwarded-For: 127.0.0.2",),
    "garbage": ("X-Forwarded-For: not-an-ip, <script>",),
    "ipv6": ("X-Forwarded-For: [2001:db8::1]",),
    "empty": ("X-Forwarded-For:",),
}
FORGED_MARKERS = ("1.2.3.4", "5.6.7.8", "127.0.0.2", "not-an-ip", "2001:db8")


@pytest.mark.parametrize("forged", FORGED_XFF.values(), ids=FORGED_XFF.keys())
@pytest.mark.parametrize("path", ["/hello", "/dashboard"], ids=["public", "protected"])
async def test_forged_x_forwarded_for_from_untrusted_client_is_replaced(
    gw: Gw, path: str, forged: tuple[str, ...]
) -> None:
    """An untrusted client's X-Forwarded-For is replaced by its address, upstream and to auth."""
    entry = await reach(gw, path, f"Cookie: session={GOOD}", *forged)
    assert received(entry, "X-Forwarded-For") == ["127.0.0.1"]
    assert not any(m in v for _, v in entry["headers"] for m in FORGED_MARKERS)
    if path == "/dashboard":
        assert [v for k, v in gw.api.calls[-1]["headers"] if key(k) == "x-forwarded-for"] == [
            "127.0.0.1"
        ]


# (trusted_proxies, X-Forwarded-For lines, chain the frontend gets, client ip the auth API gets)
TRUSTED_XFF: dict[str, tuple[list[str], tuple[str, ...], str, str]] = {
    "extended": (["127.0.0.1/32"], ("X-Forwarded-For: 1.2.3.4",), "1.2.3.4, 127.0.0.1", "1.2.3.4"),
    "none-sent": (["127.0.0.1/32"], (), "127.0.0.1", "127.0.0.1"),
    "chain": (
        ["127.0.0.1/32"],
        ("X-Forwarded-For: 9.9.9.9, 1.2.3.4",),
        "9.9.9.9, 1.2.3.4, 127.0.0.1",
        "1.2.3.4",
    ),
    "two-headers": (
        ["127.0.0.1/32"],
        ("X-Forwarded-For: 9.9.9.9", "X-Forwarded-For: 1.2.3.4"),
        "9.9.9.9, 1.2.3.4, 127.0.0.1",
        "1.2.3.4",
    ),
    "inner-trusted-hop-skipped": (
        ["127.0.0.1/32", "10.0.0.0/8"],
        ("X-Forwarded-For: 1.2.3.4, 10.0.0.5",),
        "1.2.3.4, 10.0.0.5, 127.0.0.1",
        "1.2.3.4",
    ),
    "ipv4-mapped-ipv6-hop": (
        ["127.0.0.1/32"],
        ("X-Forwarded-For: ::ffff:1.2.3.4",),
        "::ffff:1.2.3.4, 127.0.0.1",
        "1.2.3.4",
    ),
}


@pytest.mark.parametrize("case", TRUSTED_XFF.values(), ids=TRUSTED_XFF.keys())
async def test_trusted_proxy_x_forwarded_for_is_extended(
    gateway_factory: GatewayFactory, case: tuple[list[str], tuple[str, ...], str, str]
) -> None:
    """Behind a trusted proxy the chain is extended; the auth API gets the first untrusted hop."""
    trusted, lines, chain, client_ip = case
    gw = await gateway_factory(trusted_proxies=trusted)
    entry = await reach(gw, "/dashboard", f"Cookie: session={GOOD}", *lines)
    assert received(entry, "X-Forwarded-For") == [chain]
    assert [v for k, v in gw.api.calls[-1]["headers"] if key(k) == "x-forwarded-for"] == [client_ip]


# Claims about the original request: (line sent, header name, what the frontend must get).
FORWARDING_CLAIMS: dict[str, tuple[str, str, list[str]]] = {
    "x-forwarded-proto": ("X-Forwarded-Proto: https", "x-forwarded-proto", ["http"]),
    "x-forwarded-proto-underscore": ("X_Forwarded_Proto: https", "x-forwarded-proto", ["http"]),
    "x-forwarded-host": ("X-Forwarded-Host: evil.test", "x-forwarded-host", [HOST]),
    "x-forwarded-host-lower": ("x-forwarded-host: evil.test", "x-forwarded-host", [HOST]),
    "forwarded": ("Forwarded: for=1.2.3.4;proto=https;host=evil.test", "forwarded", []),
    "forwarded-lower": ("forwarded: for=1.2.3.4", "forwarded", []),
    "x-real-ip": ("X-Real-IP: 1.2.3.4", "x-real-ip", []),
    "x-real-ip-underscore": ("X_Real_IP: 1.2.3.4", "x-real-ip", []),
    "x-forwarded-prefix": ("X-Forwarded-Prefix: /admin", "x-forwarded-prefix", []),
    "x-forwarded-uri": ("X-Forwarded-Uri: /admin", "x-forwarded-uri", []),
    "x-forwarded-port": ("X-Forwarded-Port: 443", "x-forwarded-port", []),
    "x-client-ip": ("X-Client-IP: 1.2.3.4", "x-client-ip", []),
    "true-client-ip": ("True-Client-IP: 1.2.3.4", "true-client-ip", []),
}


@pytest.mark.parametrize("claim", FORWARDING_CLAIMS.values(), ids=FORWARDING_CLAIMS.keys())
@pytest.mark.parametrize("path", ["/hello", "/dashboard"], ids=["public", "protected"])
async def test_forwarding_claims_from_untrusted_client_are_replaced_or_dropped(
    gw: Gw, path: str, claim: tuple[str, str, list[str]]
) -> None:
    """X-Forwarded-Proto/Host become the gateway's view; Forwarded, X-Real-IP etc. are dropped."""
    line, name, expected = claim
    entry = await reach(gw, path, f"Cookie: session={GOOD}", line)
    assert received(entry, name) == expected
    assert not any("evil.test" in v or "1.2.3.4" in v for _, v in entry["headers"])


async def test_trusted_proxy_forwarding_claims_are_kept(gateway_factory: GatewayFactory) -> None:
    """A trusted proxy's X-Forwarded-Proto and X-Forwarded-Host describe the original request."""
    gw = await gateway_factory(trusted_proxies=["127.0.0.1/32"])
    entry = await reach(gw, "/hello", "X-Forwarded-Proto: https", "X-Forwarded-Host: app.example")
    assert received(entry, "X-Forwarded-Proto") == ["https"]
    assert received(entry, "X-Forwarded-Host") == ["app.example"]


METHOD_OVERRIDES: dict[str, str] = {
    "x-http-method-override": "X-HTTP-Method-Override: GET",
    "x-http-method": "X-HTTP-Method: GET",
    "x-method-override": "X-Method-Override: GET",
    "override-to-options": "X-HTTP-Method-Override: OPTIONS",
    "override-to-head": "X-HTTP-Method-Override: HEAD",
    "underscore": "X_HTTP_Method_Override: GET",
}


@pytest.mark.parametrize("override", METHOD_OVERRIDES.values(), ids=METHOD_OVERRIDES.keys())
@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH"])
@pytest.mark.parametrize(
    "accept, status", [("text/html", 302), ("application/json", 401)], ids=["html", "json"]
)
async def test_method_override_does_not_change_the_auth_decision(
    gw: Gw, override: str, method: str, accept: str, status: int
) -> None:
    """A method-override header on a protected path without a session is still denied."""
    response, entry = await send(
        gw, "/dashboard", override, f"Accept: {accept}", "Content-Length: 0", method=method
    )
    assert response.status == status
    assert entry is None
    assert gw.api.calls == []


# Headers a client might hope the gateway builds a URL from: none of them may show up in Location.
URL_BUILDERS: dict[str, tuple[str, ...]] = {
    "host": (),
    "x-forwarded-host": ("X-Forwarded-Host: evil.test",),
    "x-forwarded-proto": ("X-Forwarded-Proto: https", "X-Forwarded-Host: evil.test"),
    "forwarded": ("Forwarded: host=evil.test;proto=https",),
    "x-forwarded-prefix": ("X-Forwarded-Prefix: //evil.test",),
    "x-original-url": ("X-Original-URL: //evil.test/x",),
    "referer": ("Referer: http://evil.test/",),
    "origin": ("Origin: http://evil.test",),
}


@pytest.mark.parametrize("lines", URL_BUILDERS.values(), ids=URL_BUILDERS.keys())
@pytest.mark.parametrize(
    "target", ["/dashboard", "http://evil.test/dashboard"], ids=["origin-form", "absolute-form"]
)
async def test_login_redirect_is_not_built_from_client_headers(
    gw: Gw, lines: tuple[str, ...], target: str
) -> None:
    """The login redirect is a same-origin path, whatever Host or forwarding headers claim."""
    data = rawhttp.get(target, "Accept: text/html", *lines, host="evil.test")
    response = await rawhttp.exchange(gw.port, data)
    assert response.status == 302
    location = response.header("Location") or ""
    assert location.startswith("/login?")
    assert not location.startswith("//")
    assert "evil" not in location
    assert location == "/login?next=%2Fdashboard"


# X-Request-ID sent -> kept (True) or replaced by a generated one (False).
REQUEST_IDS: dict[str, tuple[tuple[str, ...], bool]] = {
    "sane": (("X-Request-ID: abc-123",), True),
    "sane-punctuation": (("X-Request-ID: web.1:req_42-x",), True),
    "max-length": (("X-Request-ID: " + "r" * 128,), True),
    "too-long": (("X-Request-ID: " + "r" * 129,), False),
    "space": (("X-Request-ID: abc 123",), False),
    "markup": (("X-Request-ID: <script>alert(1)</script>",), False),
    "quote": (('X-Request-ID: abc"123',), False),
    "empty": (("X-Request-ID:",), False),
    "non-ascii": (("X-Request-ID: r\xe9q",), False),
    "absent": ((), False),
    "underscore-spelling": (("X_Request_ID: abc-123",), False),
}


@pytest.mark.parametrize("case", REQUEST_IDS.values(), ids=REQUEST_IDS.keys())
async def test_request_id_is_kept_when_sane_or_generated(
    gw: Gw, case: tuple[tuple[str, ...], bool]
) -> None:
    """One X-Request-ID reaches the frontend and the auth API: the client's if sane, else new."""
    lines, kept = case
    entry = await reach(gw, "/dashboard", f"Cookie: session={GOOD}", *lines)
    ids = received(entry, "X-Request-ID")
    assert len(ids) == 1
    assert SANE_REQUEST_ID.match(ids[0])
    sent = lines[0].partition(":")[2].strip() if lines else None
    if kept:
        assert ids == [sent]
    else:
        assert ids[0] != sent
    auth_ids = [v for k, v in gw.api.calls[-1]["headers"] if key(k) == "x-request-id"]
    assert auth_ids == ids


async def test_duplicate_request_ids_become_one(gw: Gw) -> None:
    """Two X-Request-ID lines reach the frontend as one sane value, the same the auth API got."""
    entry = await reach(
        gw, "/dashboard", f"Cookie: session={GOOD}", "X-Request-ID: one", "X-Request-ID: two"
    )
    ids = received(entry, "X-Request-ID")
    assert len(ids) == 1
    assert SANE_REQUEST_ID.match(ids[0])
    assert [v for k, v in gw.api.calls[-1]["headers"] if key(k) == "x-request-id"] == ids


async def test_error_answer_echoes_only_a_sane_request_id(gw: Gw) -> None:
    """The gateway's own answers carry the request id, never an unsafe client value."""
    response, _ = await send(gw, "/dashboard", "Cookie: session=api-500", "X-Request-ID: a b")
    assert response.status == 503
    rid = response.header("X-Request-ID") or ""
    assert SANE_REQUEST_ID.match(rid)
    response, _ = await send(gw, "/dashboard", "Cookie: session=api-500", "X-Request-ID: ok-1")
    assert response.header("X-Request-ID") == "ok-1"
    assert b"a b" not in response.body
