"""Attack class 1: path confusion between the gateway and the frontend, over raw sockets.

The test frontend resolves paths the way permissive frameworks do (decoding until stable, `\\` as
`/`, `;` parameters, trailing dots and spaces, any letter case) and marks its answer
PROTECTED-CONTENT for anything under a protected route. A case fails if that marker reaches a
client without a valid session. Every case also holds the exact contract answer: a normalizable
path is judged (and forwarded) in its normalized form, an ambiguous one is refused with 400.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.support import rawhttp
from tests.support.backends import PROTECTED_MARKER
from tests.support.harness import GOOD, Gw, protected_seen

HTML = "Accept: text/html"
JSON = "Accept: application/json"
SESSION = f"Cookie: session={GOOD}"
# What the gateway may answer for a protected path without a session.
DENIALS = frozenset({302, 401, 400, 414})


@dataclass(frozen=True)
class Expect:
    """The contract's answer: status, and for 302 the decoded `next` (the normalized path and
    query), for 200 the exact target the frontend receives."""

    status: int
    path: str | None = None


def login(normalized: str) -> Expect:
    """A protected path: a browser is sent to sign in, with `normalized` as `next`."""
    return Expect(302, normalized)


def passes(upstream: str) -> Expect:
    """Not protected: relayed, and the frontend receives exactly `upstream`."""
    return Expect(200, upstream)


REFUSED = Expect(400)
TOO_LONG = Expect(414)


def case(case_id: str, target: str, expect: Expect) -> object:
    return pytest.param(target, expect, id=case_id)


# Each target aims at protected content; sent without a session, and then with one.
ATTACKS = [
    # Dot segments, raw.
    case("dot-parent", "/public/../dashboard", login("/dashboard")),
    case("dot-current", "/./dashboard", login("/dashboard")),
    case("dot-above-root", "/../dashboard", login("/dashboard")),
    case("dot-far-above-root", "/../../../../../dashboard/x", login("/dashboard/x")),
    case("dot-two-up", "/static/css/../../dashboard", login("/dashboard")),
    case("dot-public-into-admin", "/dashboard/public/../../admin", login("/admin")),
    case("dot-trailing-parent", "/dashboard/x/..", login("/dashboard/")),
    case("dot-trailing-current", "/dashboard/.", login("/dashboard/")),
    case("dot-many-current", "/./././dashboard/./x", login("/dashboard/x")),
    case("dot-with-query", "/x/../settings?tab=2", login("/settings?tab=2")),
    # Dot segments, encoded.
    case("enc-dotdot-lower", "/x/%2e%2e/dashboard", login("/dashboard")),
    case("enc-dotdot-upper", "/x/%2E%2E/dashboard", login("/dashboard")),
    case("enc-dotdot-first-half", "/x/%2e./dashboard", login("/dashboard")),
    case("enc-dotdot-second-half", "/x/.%2e/dashboard", login("/dashboard")),
    case("enc-dot-current", "/%2e/dashboard", login("/dashboard")),
    case("enc-dotdot-above-root", "/%2e%2e/%2e%2e/settings", login("/settings")),
    case(
        "enc-dotdot-public-into-profile",
        "/dashboard/public/%2e%2e/%2e%2e/profile",
        login("/profile"),
    ),
    case("enc-dotdot-double", "/x/%252e%252e/dashboard", REFUSED),
    case("enc-dotdot-double-half", "/x/.%252e/dashboard", REFUSED),
    case("enc-dotdot-iis-unicode", "/x/%u002e%u002e/dashboard", REFUSED),
    # Not a dot segment for anyone: overlong UTF-8 stays an opaque, unprotected segment.
    case(
        "enc-dotdot-overlong-utf8", "/x/%c0%ae%c0%ae/dashboard", passes("/x/%c0%ae%c0%ae/dashboard")
    ),
    # Doubled slashes.
    case("slash-leading-double", "//dashboard", login("/dashboard")),
    case("slash-leading-triple", "///dashboard", login("/dashboard")),
    case("slash-inner", "/dashboard//x", login("/dashboard/x")),
    case("slash-trailing", "/dashboard//", login("/dashboard/")),
    case("slash-around-dotdot", "/public//..//dashboard", login("/dashboard")),
    case("slash-empty-then-dotdot", "/x//../dashboard", login("/dashboard")),
    case("slash-many", "/////admin/////x", login("/admin/x")),
    # Percent-encoded letters.
    case("pct-first-letter", "/%64ashboard", login("/dashboard")),
    case("pct-all-letters", "/%64%61%73%68%62%6f%61%72%64", login("/dashboard")),
    case("pct-upper-hex", "/%64%61%73%68%62%6F%61%72%64/x", login("/dashboard/x")),
    case("pct-upper-letters", "/%44ASHBOARD", login("/DASHBOARD")),
    case("pct-admin", "/%61dmin", login("/admin")),
    case("pct-mid-word", "/sett%69ngs", login("/settings")),
    case("pct-unreserved-marks", "/settings/%7e%2d%5f", login("/settings/~-_")),
    case("pct-double-letter", "/%2564ashboard", REFUSED),
    case("pct-double-letter-mid", "/dash%2562oard", REFUSED),
    # Mixed case.
    case("case-upper", "/DASHBOARD", login("/DASHBOARD")),
    case("case-title", "/Dashboard/x", login("/Dashboard/x")),
    case("case-mixed", "/dAsHbOaRd", login("/dAsHbOaRd")),
    case("case-admin", "/ADMIN/users", login("/ADMIN/users")),
    case("case-settings-slash", "/Settings/", login("/Settings/")),
    case("case-and-encoding", "/PR%4fFILE", login("/PROFILE")),
    case("case-and-dotdot", "/X/../DashBoard", login("/DashBoard")),
    # Encoded '/'.
    case("enc-slash-inner", "/dashboard%2Fx", REFUSED),
    case("enc-slash-lower", "/dashboard%2fx", REFUSED),
    case("enc-slash-leading", "/%2Fdashboard", REFUSED),
    case("enc-slash-traversal", "/x%2F..%2Fdashboard", REFUSED),
    case("enc-slash-after-dotdot", "/x/..%2Fdashboard", REFUSED),
    case("enc-slash-all-encoded", "/%2e%2e%2fdashboard", REFUSED),
    case("enc-slash-double", "/x%252F..%252Fdashboard", REFUSED),
    case("enc-slash-out-of-public", "/dashboard/public%2F..%2F..%2Fadmin", REFUSED),
    # '\', raw and encoded.
    case("bs-raw-traversal", "/x\\..\\dashboard", REFUSED),
    case("bs-raw-leading", "/\\dashboard", REFUSED),
    case("bs-raw-after-dotdot", "/x/..\\dashboard", REFUSED),
    case("bs-enc-upper", "/x%5C..%5Cdashboard", REFUSED),
    case("bs-enc-lower", "/x%5c..%5cdashboard", REFUSED),
    case("bs-enc-after-dotdot", "/x/..%5Cdashboard", REFUSED),
    case("bs-enc-double", "/x%255C..%255Cdashboard", REFUSED),
    # ';' parameters.
    case("semi-after", "/dashboard;x", login("/dashboard")),
    case("semi-jsessionid", "/dashboard;jsessionid=abc/x", login("/dashboard/x")),
    case("semi-dotdot", "/public/..;/dashboard", login("/dashboard")),
    case("semi-dotdot-root", "/..;/dashboard", login("/dashboard")),
    case("semi-dot", "/.;/dashboard", login("/dashboard")),
    case("semi-empty-segment", "/;x/dashboard", login("/dashboard")),
    case("semi-chain", "/profile;a/..;b/admin;c", login("/admin")),
    case("semi-static-suffix", "/dashboard;.css", login("/dashboard")),
    case("semi-enc-dotdot-param", "/public/%2e%2e;x/dashboard", login("/dashboard")),
    case("semi-enc", "/dashboard%3Bx", REFUSED),
    case("semi-enc-lower-dotdot", "/public/..%3b/dashboard", REFUSED),
    case("semi-enc-double", "/dashboard%253Bx", REFUSED),
    # Trailing dots, spaces and slashes.
    case("trail-dot", "/dashboard.", login("/dashboard")),
    case("trail-dots", "/dashboard...", login("/dashboard")),
    case("trail-dot-then-segment", "/dashboard./x", login("/dashboard/x")),
    case("trail-enc-dot", "/dashboard%2e", login("/dashboard")),
    case("trail-enc-dots", "/dashboard%2e%2e", login("/dashboard")),
    case("trail-enc-space", "/dashboard%20", login("/dashboard")),
    case("trail-dot-space-mix", "/admin.%20.", login("/admin")),
    case("trail-space-then-segment", "/admin%20/x", login("/admin/x")),
    case("trail-slash", "/dashboard/", login("/dashboard/")),
    case("trail-slashes", "/dashboard///", login("/dashboard/")),
    case("trail-enc-tab", "/dashboard%09", REFUSED),
    case("trail-enc-vtab", "/dashboard%0b", REFUSED),
    case("trail-enc-cr", "/dashboard%0d", REFUSED),
    # NUL.
    case("nul-end", "/dashboard%00", REFUSED),
    case("nul-extension", "/dashboard%00.html", REFUSED),
    case("nul-traversal", "/public%00/../dashboard", REFUSED),
    case("nul-double", "/dashboard%2500", REFUSED),
    # Raw control characters and whitespace in the target.
    case("raw-nul", "/dashboard\x00", REFUSED),
    case("raw-soh", "/dashboard\x01", REFUSED),
    case("raw-del", "/dashboard\x7f", REFUSED),
    case("raw-tab", "/dashboard\t", REFUSED),
    case("raw-space", "/dash board", REFUSED),
    # Invalid percent-encoding.
    case("esc-truncated", "/dashboard%", REFUSED),
    case("esc-truncated-one-digit", "/dashboard%2", REFUSED),
    case("esc-non-hex", "/dashboard%zz", REFUSED),
    case("esc-half-hex", "/dash%g0board", REFUSED),
    case("esc-iis-unicode", "/%u0064ashboard", REFUSED),
    case("esc-nested", "/%%32%65%%32%65/dashboard", REFUSED),
    case("esc-bare-segment", "/x/%/../dashboard", REFUSED),
    # Fragments.
    case("frag-raw", "/dashboard#x", REFUSED),
    case("frag-traversal", "/public#/../dashboard", REFUSED),
    case("frag-empty", "/dashboard#", REFUSED),
    case("frag-in-query", "/dashboard?x=1#y", REFUSED),
    # An encoded '#' is data, not a fragment: the segments around it still fold.
    case("frag-enc-then-dotdot", "/public%23/../dashboard", login("/dashboard")),
    # Absolute-form targets: matched on the path, the host never used.
    case("abs-http", "http://evil.com/dashboard", login("/dashboard")),
    case("abs-https", "https://evil.com/dashboard", login("/dashboard")),
    case("abs-upper-scheme", "HTTP://EVIL.COM/dashboard", login("/dashboard")),
    case("abs-same-host", "http://gateway.test/settings/x", login("/settings/x")),
    case("abs-port", "http://evil.com:8080/admin", login("/admin")),
    case("abs-userinfo", "http://user:pw@evil.com/dashboard", login("/dashboard")),
    case("abs-dotdot", "http://evil.com/public/../dashboard", login("/dashboard")),
    case("abs-double-slash", "http://evil.com//dashboard", login("/dashboard")),
    case("abs-enc-dotdot", "http://evil.com/%2e%2e/dashboard", login("/dashboard")),
    case("abs-query", "http://evil.com/dashboard?tab=1", login("/dashboard?tab=1")),
    case("abs-case", "http://evil.com/DashBoard", login("/DashBoard")),
    case("abs-semicolon", "http://evil.com/public/..;/admin", login("/admin")),
    case("abs-enc-slash", "http://evil.com/dashboard%2Fx", REFUSED),
    case("abs-backslash", "http://evil.com/x\\..\\dashboard", REFUSED),
    case("abs-fragment", "http://evil.com/dashboard#x", REFUSED),
    case("abs-host-named-like-route", "http://dashboard/", passes("/")),
    case("abs-host-named-like-route-no-slash", "http://dashboard", passes("/")),
    case("abs-route-in-query", "http://evil.com?/dashboard", passes("/?/dashboard")),
    case("abs-other-scheme", "ftp://evil.com/dashboard", REFUSED),
    case("origin-without-slash", "dashboard", REFUSED),
    # Overlong paths.
    case("long-request-line", "/dashboard/" + "a" * 17_000, TOO_LONG),
    case("long-traversal", "/" + "a/" * 9_000 + "../" * 9_000 + "dashboard", TOO_LONG),
    case("long-under-limit", "/dashboard/" + "a" * 7_000, login("/dashboard/" + "a" * 7_000)),
    case("long-dot-segments", "/" + "./" * 4_000 + "dashboard", login("/dashboard")),
    case("long-parent-segments", "/x" * 2_000 + "/.." * 2_000 + "/dashboard", login("/dashboard")),
    case("long-slashes", "/" * 8_000 + "admin", login("/admin")),
]

# A path already in normal form goes to the frontend byte for byte, query untouched.
ALREADY_NORMAL = [
    pytest.param(target, id=target[:60])
    for target in [
        "/dashboard",
        "/dashboard/",
        "/DashBoard/Settings",
        "/dashboard/x/y/z",
        "/dashboard/caf%C3%A9",
        "/dashboard/caf%c3%a9",
        "/dashboard/a%20b",
        "/dashboard/q%3Fx",
        "/dashboard/h%23x",
        "/dashboard/p%25",
        "/dashboard/a%2Bb",
        "/dashboard/a:b@c!$&'()*+,=",
        "/dashboard/~user/x-y_z",
        "/dashboard/.well-known",
        "/dashboard/..b",
        "/dashboard/app.min.js",
        "/dashboard?x=%2F&y=..%2F&z=%00",
        "/dashboard?next=//evil.com&a=1&a=2",
        "/dashboard?q=a+b%20c",
        "/settings/%E2%9C%93",
        "/",
        "/static/app.js?v=1",
    ]
]

# The public exception under /dashboard holds exactly, and no further.
PUBLIC_EXCEPTION = [
    case("exact", "/dashboard/public", passes("/dashboard/public")),
    case("below", "/dashboard/public/help", passes("/dashboard/public/help")),
    case("trailing-slash", "/dashboard/public/", passes("/dashboard/public/")),
    case("case", "/DASHBOARD/Public", passes("/DASHBOARD/Public")),
    case("enc-letter", "/dashboard/publi%63", passes("/dashboard/public")),
    case("semicolon", "/dashboard/public;x", passes("/dashboard/public")),
    case("trailing-dot", "/dashboard/public.", passes("/dashboard/public")),
    case("dotdot-out", "/dashboard/public/../secret", login("/dashboard/secret")),
    case("prefix-lookalike", "/dashboard/publicx", login("/dashboard/publicx")),
    case("prefix-lookalike-dash", "/dashboard/public-admin", login("/dashboard/public-admin")),
    case("semicolon-dotdot", "/dashboard/public;/../x", login("/dashboard/x")),
    case("parent-only", "/dashboard/public/..", login("/dashboard/")),
    case("enc-dotdot-out", "/dashboard/public/%2e%2e/secret", login("/dashboard/secret")),
    case("semicolon-param-dotdot", "/dashboard/public/..;/secret", login("/dashboard/secret")),
    case("trailing-dot-dotdot", "/dashboard/public./../secret", login("/dashboard/secret")),
    case("double-slash-dotdot", "/dashboard/public//../secret", login("/dashboard/secret")),
    case("in-query", "/dashboard?x=/dashboard/public", login("/dashboard?x=/dashboard/public")),
    case("in-query-bare", "/dashboard?/dashboard/public", login("/dashboard?/dashboard/public")),
    case("enc-slash-out", "/dashboard/public%2F..%2Fsecret", REFUSED),
    case("backslash-out", "/dashboard/public\\..\\secret", REFUSED),
    case("nul-out", "/dashboard/public%00/../secret", REFUSED),
    case("enc-semicolon-out", "/dashboard/public%3B/../secret", REFUSED),
]


def next_of(response: rawhttp.RawResponse) -> str:
    """The decoded `next` of a redirect to login; asserts there is exactly one."""
    location = response.header("Location")
    assert location is not None, response.raw_head
    assert location.startswith("/login?next="), location
    values = parse_qs(urlsplit(location).query, keep_blank_values=True)
    assert list(values) == ["next"], location
    assert len(values["next"]) == 1, location
    return values["next"][0]


async def send(gw: Gw, target: str, *headers: str) -> rawhttp.RawResponse:
    return await rawhttp.exchange(gw.port, rawhttp.get(target, *headers))


@pytest.mark.parametrize(("target", "expect"), ATTACKS)
async def test_attack_without_session_never_serves_protected_content(
    gw: Gw, target: str, expect: Expect
) -> None:
    """Without a session, no path trick gets PROTECTED-CONTENT out of the frontend."""
    response = await send(gw, target, HTML)
    assert PROTECTED_MARKER.encode() not in response.body
    assert response.status in DENIALS or response.status == 200, response.raw_head
    assert protected_seen(gw) == []


@pytest.mark.parametrize(("target", "expect"), ATTACKS)
async def test_attack_without_session_gets_contract_answer(
    gw: Gw, target: str, expect: Expect
) -> None:
    """Without a session: login redirect on the normalized path, 400 if ambiguous, 414 if long."""
    response = await send(gw, target, HTML)
    assert response.status == expect.status, (response.raw_head, response.body[:300])
    if expect.status == 302:
        assert next_of(response) == expect.path
        assert gw.seen.seen == []
    elif expect.status == 200:
        assert [e["raw_path"] for e in gw.seen.seen] == [expect.path]
    else:
        assert gw.seen.seen == []


@pytest.mark.parametrize(("target", "expect"), ATTACKS)
async def test_attack_from_script_without_session_gets_401_or_refusal(
    gw: Gw, target: str, expect: Expect
) -> None:
    """A script (Accept: application/json) without a session gets 401 where a browser gets 302."""
    response = await send(gw, target, JSON)
    wanted = 401 if expect.status == 302 else expect.status
    assert response.status == wanted, (response.raw_head, response.body[:300])
    assert response.header("Location") is None
    assert protected_seen(gw) == []


@pytest.mark.parametrize(("target", "expect"), ATTACKS)
async def test_attack_with_session_reaches_frontend_normalized(
    gw: Gw, target: str, expect: Expect
) -> None:
    """With a valid session the frontend receives the normalized path; refusals stay refusals."""
    response = await send(gw, target, HTML, SESSION)
    seen = [entry["raw_path"] for entry in gw.seen.seen]
    if expect.status in (200, 302):
        assert response.status == 200, (response.raw_head, response.body[:300])
        assert seen == [expect.path]
    else:
        assert response.status == expect.status, (response.raw_head, response.body[:300])
        assert seen == []


@pytest.mark.parametrize("target", ALREADY_NORMAL)
async def test_already_normal_target_reaches_frontend_byte_for_byte(gw: Gw, target: str) -> None:
    """A path already in normal form, and every query, reach the frontend exactly as sent."""
    response = await send(gw, target, HTML, SESSION)
    assert response.status == 200, response.raw_head
    assert [entry["raw_path"] for entry in gw.seen.seen] == [target]


@pytest.mark.parametrize(("target", "expect"), PUBLIC_EXCEPTION)
async def test_public_exception_holds_exactly(gw: Gw, target: str, expect: Expect) -> None:
    """/dashboard/public is reachable without a session; nothing that escapes it is."""
    response = await send(gw, target, HTML)
    assert response.status == expect.status, (response.raw_head, response.body[:300])
    seen = [entry["raw_path"] for entry in gw.seen.seen]
    if expect.status == 200:
        assert seen == [expect.path]
        assert gw.seen.seen[0]["resolved"].startswith("/dashboard/public")
    else:
        assert seen == []
        if expect.status == 302:
            assert next_of(response) == expect.path


ABSOLUTE_FORM = [
    pytest.param(target, id=target)
    for target in [
        "http://evil.com/dashboard",
        "https://evil.com:8443/dashboard/x?y=1",
        "http://user:pw@evil.com/settings",
        "http://evil.com/",
        "http://evil.com",
    ]
]


@pytest.mark.parametrize("target", ABSOLUTE_FORM)
async def test_absolute_form_host_never_reaches_frontend(gw: Gw, target: str) -> None:
    """The host of an absolute-form target is dropped: the frontend sees neither it nor a URL."""
    response = await send(gw, target, HTML, SESSION)
    assert response.status == 200, response.raw_head
    (entry,) = gw.seen.seen
    assert entry["raw_path"].startswith("/")
    assert "evil.com" not in entry["raw_path"]
    assert all("evil.com" not in value for _, value in entry["headers"]), entry["headers"]
    hosts = [value for name, value in entry["headers"] if name.lower() == "host"]
    assert hosts == ["gateway.test"]
