"""Attack class 6: open redirect through the login `next`.

A browser without a session is sent to `/login?next=<normalized path and query>`. Whatever the
request looks like (protocol-relative paths, backslashes, control characters, schemes, userinfo,
absolute-form targets, forged Host and forwarding headers, encoded variants), the Location is
same-origin and `next` is a path on the same origin: a browser or a login page that follows it
can never leave app.example.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from urllib.parse import parse_qs, urljoin, urlsplit

import pytest

from tests.support import rawhttp
from tests.support.harness import GatewayFactory, Gw

HTML = "Accept: text/html"
ORIGIN = "https://app.example/"
EVIL = "evil.com"


@dataclass(frozen=True)
class Expect:
    """302 to login with `next` exactly this (decoded), or 400 when next is None."""

    next: str | None


REFUSED = Expect(None)


def login(next_: str) -> Expect:
    return Expect(next_)


@pytest.fixture
async def everything_protected(gateway_factory: GatewayFactory) -> Gw:
    """A gateway that protects every path but the login page, so every payload meets login."""
    return await gateway_factory(protect=["/"], public=["/login"])


def payload(
    case_id: str, target: str, expect: Expect, *headers: str, host: str = "app.example"
) -> object:
    return pytest.param(target, headers, host, expect, id=case_id)


# Against a gateway that protects everything: each payload either meets login or is refused.
PAYLOADS = [
    # Protocol-relative: '//' must never survive at the start of next.
    payload("double-slash", "//evil.com/dashboard", login("/evil.com/dashboard")),
    payload("double-slash-host-only", "//evil.com", login("/evil.com")),
    payload("double-slash-trailing", "//evil.com/", login("/evil.com/")),
    payload("triple-slash", "///evil.com/dashboard", login("/evil.com/dashboard")),
    payload("many-slashes", "//////evil.com", login("/evil.com")),
    payload("double-slash-trailing-dot", "//evil.com./", login("/evil.com/")),
    payload("double-slash-port", "//evil.com:443/x", login("/evil.com:443/x")),
    # Backslashes, raw and encoded (browsers read '\' as '/').
    payload("backslash", "/\\evil.com", REFUSED),
    payload("backslash-double", "/\\\\evil.com", REFUSED),
    payload("backslash-slash", "/\\/evil.com", REFUSED),
    payload("backslash-first", "\\/evil.com", REFUSED),
    payload("backslash-encoded", "/%5Cevil.com", REFUSED),
    payload("backslash-encoded-lower", "/%5cevil.com", REFUSED),
    payload("backslash-encoded-double", "/%5C%5Cevil.com", REFUSED),
    payload("backslash-double-encoded", "/%255Cevil.com", REFUSED),
    payload("backslash-dotdot", "/..%5C..%5Cevil.com", REFUSED),
    # Control characters browsers strip ('/\t/evil.com' is '//evil.com' to a browser).
    payload("tab-encoded", "/%09/evil.com", REFUSED),
    payload("newline-encoded", "/%0a/evil.com", REFUSED),
    payload("cr-encoded", "/%0d/evil.com", REFUSED),
    payload("nul-encoded", "/%00/evil.com", REFUSED),
    payload("tab-raw", "/\t/evil.com", REFUSED),
    payload("crlf-header-injection", "/%0d%0aLocation:%20//evil.com", REFUSED),
    payload("tab-double-encoded", "/%2509/evil.com", REFUSED),
    # Encoded slashes.
    payload("slash-encoded", "/%2Fevil.com", REFUSED),
    payload("slash-encoded-double", "/%2F%2Fevil.com", REFUSED),
    payload("slash-encoded-second", "/%2f/evil.com", REFUSED),
    payload("slash-double-encoded", "/%252F%252Fevil.com", REFUSED),
    payload("scheme-encoded-slashes", "/https%3A%2F%2Fevil.com", REFUSED),
    # Schemes.
    payload("scheme-target", "https:evil.com", REFUSED),
    payload("scheme-target-slashes", "https:/evil.com", REFUSED),
    payload("javascript-target", "javascript:alert(1)", REFUSED),
    payload("scheme-in-path", "/https:evil.com", login("/https:evil.com")),
    payload("scheme-slashes-in-path", "/https://evil.com", login("/https:/evil.com")),
    payload("javascript-in-path", "/javascript:alert(1)", login("/javascript:alert(1)")),
    payload("scheme-colon-encoded", "/https%3Aevil.com", login("/https%3Aevil.com")),
    # Userinfo.
    payload("userinfo", "//trusted@evil.com", login("/trusted@evil.com")),
    payload("userinfo-path", "//app.example@evil.com/x", login("/app.example@evil.com/x")),
    payload("at-sign", "/@evil.com", login("/@evil.com")),
    payload("at-sign-encoded", "/%40evil.com", login("/%40evil.com")),
    # Dot segments and parameters that would leave '//' behind.
    payload("dotdot-double-slash", "/dashboard/..//evil.com", login("/evil.com")),
    payload("dot-double-slash", "/.//evil.com", login("/evil.com")),
    payload("dotdot-encoded-double-slash", "/dashboard/%2e%2e//evil.com", login("/evil.com")),
    payload("dotdot-chain-double-slash", "/%2e%2e/%2e%2e//evil.com", login("/evil.com")),
    payload("semicolon-double-slash", "/;//evil.com", login("/evil.com")),
    payload("semicolon-dotdot-double-slash", "/x/..;//evil.com", login("/evil.com")),
    payload("space-double-slash", "/%20//evil.com", login("/evil.com")),
    payload("dot-space-double-slash", "/.%20//evil.com", login("/evil.com")),
    # Look-alike characters stay encoded data inside one path segment.
    payload("fullwidth-solidus", "/%EF%BC%8Fevil.com", login("/%EF%BC%8Fevil.com")),
    payload("fullwidth-backslash", "/%EF%BC%BCevil.com", login("/%EF%BC%BCevil.com")),
    payload("ideographic-full-stop", "//evil%E3%80%82com", login("/evil%E3%80%82com")),
    # The query rides along as data inside one `next` value.
    payload("query-next", "/dashboard?next=//evil.com", login("/dashboard?next=//evil.com")),
    payload(
        "query-next-scheme",
        "/dashboard?next=https://evil.com",
        login("/dashboard?next=https://evil.com"),
    ),
    payload("query-slashes", "/?//evil.com", login("/?//evil.com")),
    payload(
        "query-param-injection",
        "/dashboard?a=1&next=//evil.com",
        login("/dashboard?a=1&next=//evil.com"),
    ),
    payload(
        "query-encoded-crlf",
        "/dashboard?x=%0d%0aLocation:%20//evil.com",
        login("/dashboard?x=%0d%0aLocation:%20//evil.com"),
    ),
    payload(
        "query-backslash-encoded",
        "/dashboard?r=%5C%5Cevil.com",
        login("/dashboard?r=%5C%5Cevil.com"),
    ),
    payload("query-fragment", "/dashboard?x=1#//evil.com", REFUSED),
    payload("fragment", "/#//evil.com", REFUSED),
    payload("root", "/", login("/")),
    # Absolute-form targets: the host is dropped.
    payload("absolute-form", "http://evil.com/dashboard", login("/dashboard")),
    payload("absolute-form-https", "https://evil.com/", login("/")),
    payload("absolute-form-no-path", "http://evil.com", login("/")),
    payload("absolute-form-double-slash", "http://evil.com//evil.com/x", login("/evil.com/x")),
    payload("absolute-form-userinfo", "http://app.example@evil.com/dashboard", login("/dashboard")),
    payload("absolute-form-query", "http://evil.com?next=//evil.com", login("/?next=//evil.com")),
    payload("absolute-form-upper", "HTTPS://EVIL.COM/Dashboard", login("/Dashboard")),
    # Host and forwarding headers never build the Location.
    payload("host-header", "/dashboard", login("/dashboard"), host=EVIL),
    payload("host-header-slashes", "/dashboard", login("/dashboard"), host="//evil.com"),
    payload("host-header-with-path", "/dashboard", login("/dashboard"), host="evil.com/x"),
    payload("host-and-absolute-form", "http://evil.com/dashboard", login("/dashboard"), host=EVIL),
    payload("x-forwarded-host", "/dashboard", login("/dashboard"), "X-Forwarded-Host: evil.com"),
    payload(
        "x-forwarded-proto-host",
        "/dashboard",
        login("/dashboard"),
        "X-Forwarded-Proto: https",
        "X-Forwarded-Host: evil.com",
    ),
    payload(
        "x-forwarded-prefix", "/dashboard", login("/dashboard"), "X-Forwarded-Prefix: //evil.com"
    ),
    payload("x-forwarded-uri", "/dashboard", login("/dashboard"), "X-Forwarded-Uri: //evil.com"),
    payload(
        "x-forwarded-server", "/dashboard", login("/dashboard"), "X-Forwarded-Server: evil.com"
    ),
    payload("forwarded", "/dashboard", login("/dashboard"), "Forwarded: host=evil.com;proto=https"),
    payload("x-original-url", "/dashboard", login("/dashboard"), "X-Original-URL: //evil.com"),
    payload("x-rewrite-url", "/dashboard", login("/dashboard"), "X-Rewrite-URL: //evil.com"),
    payload("x-host", "/dashboard", login("/dashboard"), "X-Host: evil.com"),
    payload("referer", "/dashboard", login("/dashboard"), "Referer: https://evil.com/"),
    payload("origin", "/dashboard", login("/dashboard"), "Origin: https://evil.com"),
]

# Against the default config (only /dashboard, /settings, /profile, /admin protected).
DEFAULT_PAYLOADS = [
    payload("double-slash-route", "//dashboard", login("/dashboard")),
    payload("route-then-double-slash", "/dashboard//evil.com", login("/dashboard/evil.com")),
    payload("route-dotdot-route", "/x/..//admin//evil.com", login("/admin/evil.com")),
    payload("route-query-next", "/settings?next=//evil.com", login("/settings?next=//evil.com")),
    payload("route-absolute-form", "http://evil.com/profile", login("/profile")),
    payload("route-absolute-form-slashes", "http://evil.com//dashboard//x", login("/dashboard/x")),
    payload("route-host-header", "/admin", login("/admin"), host=EVIL),
    payload("route-forwarded-host", "/admin", login("/admin"), "X-Forwarded-Host: evil.com"),
    payload("route-backslash", "/dashboard\\evil.com", REFUSED),
    payload("route-tab", "/dashboard/%09/evil.com", REFUSED),
]


def has_control(text: str) -> bool:
    return any(ord(c) < 0x20 or ord(c) == 0x7F for c in text)


def assert_same_origin_path(value: str) -> None:
    """`value` is a path on the current origin, for Python and for a browser's URL parser."""
    assert value.startswith("/"), value
    assert value == "/" or value[1] not in "/\\", value
    assert not has_control(value), value
    parts = urlsplit(value)
    assert parts.scheme == "" and parts.netloc == "", value
    joined = urlsplit(urljoin(ORIGIN, value))
    assert (joined.scheme, joined.netloc) == ("https", "app.example"), value
    # WHATWG URL parsing drops tab and newlines and reads '\' as '/'; the result must still be
    # a path that does not start with '//'.
    browser = value.replace("\t", "").replace("\n", "").replace("\r", "").replace("\\", "/")
    assert browser == "/" or not browser.startswith("//"), value


def login_next(response: rawhttp.RawResponse) -> str:
    """Check the redirect to login is same-origin and return its one decoded `next`."""
    assert response.status == 302, (response.raw_head, response.body[:300])
    locations = response.all("Location")
    assert len(locations) == 1, response.raw_head
    location = locations[0]
    assert location.startswith("/login?next="), location
    assert not has_control(location) and " " not in location, location
    assert_same_origin_path(location)
    query = parse_qs(urlsplit(location).query, keep_blank_values=True, strict_parsing=True)
    assert list(query) == ["next"] and len(query["next"]) == 1, location
    next_ = query["next"][0]
    assert_same_origin_path(next_)
    assert response.header("Cache-Control") == "no-store"
    return next_


async def send(gw: Gw, target: str, headers: tuple[str, ...], host: str) -> rawhttp.RawResponse:
    return await rawhttp.exchange(gw.port, rawhttp.get(target, HTML, *headers, host=host))


@pytest.mark.parametrize(("target", "headers", "host", "expect"), PAYLOADS)
async def test_payload_never_produces_off_site_location(
    everything_protected: Gw, target: str, headers: tuple[str, ...], host: str, expect: Expect
) -> None:
    """Every payload meets a same-origin login redirect with the normalized `next`, or a 400."""
    gw = everything_protected
    response = await send(gw, target, headers, host)
    if expect.next is None:
        assert response.status == 400, (response.raw_head, response.body[:300])
        assert response.header("Location") is None
    else:
        assert login_next(response) == expect.next
    assert gw.seen.seen == []


@pytest.mark.parametrize(("target", "headers", "host", "expect"), DEFAULT_PAYLOADS)
async def test_payload_on_protected_route_never_produces_off_site_location(
    gw: Gw, target: str, headers: tuple[str, ...], host: str, expect: Expect
) -> None:
    """With the default rules, payloads aimed at a protected route stay same-origin too."""
    response = await send(gw, target, headers, host)
    if expect.next is None:
        assert response.status == 400, (response.raw_head, response.body[:300])
        assert response.header("Location") is None
    else:
        assert login_next(response) == expect.next
    assert gw.seen.seen == []


# Who gets the redirect and who gets 401 JSON: a page navigation versus a script.
ACCEPT_SPLIT = [
    pytest.param((), 302, id="no-accept"),
    pytest.param(("Accept: text/html",), 302, id="text-html"),
    pytest.param(("Accept: TEXT/HTML",), 302, id="text-html-upper"),
    pytest.param(
        ("Accept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",),
        302,
        id="browser-navigation",
    ),
    pytest.param(("Accept: application/json",), 401, id="json"),
    pytest.param(("Accept: */*",), 401, id="fetch-any"),
    pytest.param(("Accept: application/json, text/plain, */*",), 401, id="axios"),
    pytest.param(("Accept: text/html;q=0, application/json",), 401, id="html-refused"),
    pytest.param(("Accept: text/html", "X-Requested-With: XMLHttpRequest"), 401, id="xhr"),
    pytest.param(("X-Requested-With: xmlhttprequest",), 401, id="xhr-lower"),
]


@pytest.mark.parametrize(("headers", "status"), ACCEPT_SPLIT)
@pytest.mark.parametrize("target", ["/dashboard?tab=1", "//evil.com/dashboard"])
async def test_navigation_gets_redirect_and_script_gets_401_json(
    everything_protected: Gw, target: str, headers: tuple[str, ...], status: int
) -> None:
    """A page navigation gets the 302 to login; a script gets 401 JSON and no Location."""
    gw = everything_protected
    response = await rawhttp.exchange(gw.port, rawhttp.get(target, *headers, host=EVIL))
    assert response.status == status, response.raw_head
    if status == 302:
        login_next(response)
    else:
        assert response.header("Location") is None
        assert (response.header("Content-Type") or "").startswith("application/json")
        body = json.loads(response.body)
        assert body["status"] == 401
        assert EVIL not in response.body.decode()
        assert response.header("Cache-Control") == "no-store"
    assert gw.seen.seen == []


LOGIN_WITH_QUERY = [
    pytest.param("/dashboard", "/dashboard", id="plain"),
    pytest.param("/dashboard?next=//evil.com", "/dashboard?next=//evil.com", id="next-in-query"),
    pytest.param(
        "/dashboard?flow=evil&next=//evil.com",
        "/dashboard?flow=evil&next=//evil.com",
        id="flow-and-next-in-query",
    ),
    pytest.param("//evil.com/dashboard", "/evil.com/dashboard", id="double-slash"),
]


@pytest.mark.parametrize(("target", "expected"), LOGIN_WITH_QUERY)
async def test_login_url_with_query_keeps_one_next(
    gateway_factory: GatewayFactory, target: str, expected: str
) -> None:
    """A login_url with its own query gets `&next=`; the request cannot add a second one."""
    gw = await gateway_factory(protect=["/"], public=["/login"], login_url="/login?flow=web")
    response = await rawhttp.exchange(gw.port, rawhttp.get(target, HTML, host=EVIL))
    assert response.status == 302, response.raw_head
    location = response.header("Location")
    assert location is not None
    assert location.startswith("/login?flow=web&next="), location
    query = parse_qs(urlsplit(location).query, keep_blank_values=True, strict_parsing=True)
    assert query == {"flow": ["web"], "next": [expected]}, location
    assert_same_origin_path(location)
    assert_same_origin_path(expected)
