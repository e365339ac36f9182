"""Attack class 3, cookies: the session the gateway validates is exactly the one the frontend reads.

Missing, empty and look-alike cookies are no session (denied without asking the auth API);
duplicates are ambiguous and refused with 400; malformed and oversized values are refused; junk
around the session cookie never makes the gateway validate one value while the frontend reads
another; and the validation call carries the session cookie alone, nothing else of the client's.
"""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp._cookie_helpers import parse_cookie_header

from tests.support import rawhttp
from tests.support.backends import PROTECTED_MARKER
from tests.support.harness import GOOD, Gw

HOST = "gateway.test"
USER_AGENT = "hamrah-web-server/1.0"
OTHER = "other-token-9876543210"


async def send(
    gw: Gw, target: str, *headers: str, accept: str = "text/html"
) -> tuple[rawhttp.RawResponse, dict[str, Any] | None]:
    """Send exact bytes; return the answer and what the frontend saw for it (None: not reached)."""
    before = len(gw.seen.seen)
    response = await rawhttp.exchange(
        gw.port, rawhttp.get(target, f"Accept: {accept}", *headers, host=HOST)
    )
    entry = gw.seen.seen[-1] if len(gw.seen.seen) > before else None
    return response, entry


def header_values(headers: list[list[str]], name: str) -> list[str]:
    return [v for k, v in headers if k.lower() == name.lower()]


def frontend_reads(entry: dict[str, Any]) -> str | None:
    """The session value the test frontend (aiohttp's request.cookies) reads from what it got."""
    cookie_headers = header_values(entry["headers"], "Cookie")
    parsed = parse_cookie_header(cookie_headers[0] if cookie_headers else "")
    values = {name: morsel.value for name, morsel in parsed}
    return values.get("session")


def validated_value(call: dict[str, Any]) -> str | None:
    """The session value the auth API read from the gateway's validation call."""
    cookie_headers = header_values(call["headers"], "Cookie")
    assert len(cookie_headers) == 1
    parsed = parse_cookie_header(cookie_headers[0])
    assert [name for name, _ in parsed] == ["session"], cookie_headers
    return parsed[0][1].value


def assert_refused(gw: Gw, response: rawhttp.RawResponse, entry: dict[str, Any] | None) -> None:
    """Not a pass: no frontend contact, no validation call, no protected content."""
    assert entry is None
    assert gw.api.calls == []
    assert PROTECTED_MARKER.encode() not in response.body


# Cookie header lines that carry no session: denied without a validation call.
NO_SESSION: dict[str, tuple[str, ...]] = {
    "missing": (),
    "empty-header": ("Cookie:",),
    "empty-value": ("Cookie: session=",),
    "empty-value-then-others": ("Cookie: session=; a=1",),
    "empty-value-spaces": ("Cookie: a=1; session=  ; b=2",),
    "name-without-equals": ("Cookie: session",),
    "others-only": ("Cookie: a=1; b=2",),
    "value-as-name": (f"Cookie: {GOOD}",),
    # Look-alike names: none is the session cookie.
    "capitalised": (f"Cookie: Session={GOOD}",),
    "upper-case": (f"Cookie: SESSION={GOOD}",),
    "host-prefix": (f"Cookie: __Host-session={GOOD}",),
    "secure-prefix": (f"Cookie: __Secure-session={GOOD}",),
    "suffix": (f"Cookie: sessionx={GOOD}",),
    "prefix": (f"Cookie: xsession={GOOD}",),
    "underscore-suffix": (f"Cookie: session_={GOOD}",),
    "dash-suffix": (f"Cookie: session-id={GOOD}",),
    "percent-encoded-name": (f"Cookie: sess%69on={GOOD}",),
    "dot-suffix": (f"Cookie: session.={GOOD}",),
    "look-alikes-together": (f"Cookie: Session={GOOD}; __Host-session={GOOD}; sessionx={GOOD}",),
    "look-alike-second-header": ("Cookie: a=1", f"Cookie: xsession={GOOD}"),
}


@pytest.mark.parametrize("lines", NO_SESSION.values(), ids=NO_SESSION.keys())
@pytest.mark.parametrize(
    "accept, status", [("text/html", 302), ("application/json", 401)], ids=["html", "json"]
)
async def test_no_session_cookie_is_denied_without_asking_the_auth_api(
    gw: Gw, lines: tuple[str, ...], accept: str, status: int
) -> None:
    """Missing, empty and look-alike cookies are no session: denied, and the auth API not called."""
    response, entry = await send(gw, "/dashboard", *lines, accept=accept)
    assert response.status == status
    if status == 302:
        assert (response.header("Location") or "").startswith("/login?")
    assert_refused(gw, response, entry)


# The session cookie sent more than once: ambiguous, so refused with 400.
DUPLICATES: dict[str, tuple[str, ...]] = {
    "one-header-two-values": (f"Cookie: session={GOOD}; session={OTHER}",),
    "one-header-same-value": (f"Cookie: session={GOOD}; session={GOOD}",),
    "bad-then-good": (f"Cookie: session={OTHER}; session={GOOD}",),
    "empty-then-good": (f"Cookie: session=; session={GOOD}",),
    "good-then-empty": (f"Cookie: session={GOOD}; session=",),
    "between-others": (f"Cookie: a=1; session={GOOD}; b=2; session={OTHER}; c=3",),
    "leading-space-copy": (f"Cookie: session={GOOD};  session={OTHER}",),
    "two-cookie-headers": (f"Cookie: session={GOOD}", f"Cookie: session={OTHER}"),
    "two-cookie-headers-same-value": (f"Cookie: session={GOOD}", f"Cookie: session={GOOD}"),
    "two-cookie-headers-lower-case": (f"Cookie: session={GOOD}", f"cookie: session={OTHER}"),
    "three-copies": (f"Cookie: session={GOOD}; session={GOOD}", f"Cookie: session={OTHER}"),
    # Lax parsers (aiohttp's, Python's SimpleCookie) also start a new pair after ', ' or ' '
    # inside another cookie's value, so they see the session cookie twice in these.
    "comma-hidden-copy-before": (f"Cookie: a=1, session={OTHER}; session={GOOD}",),
    "comma-hidden-copy-after": (f"Cookie: session={GOOD}; a=1, session={OTHER}",),
    "space-hidden-copy-after": (f"Cookie: session={GOOD}; a=1 session={OTHER}",),
    "quoted-then-space-copy-after": (f'Cookie: session={GOOD}; a="1" session={OTHER}',),
}


@pytest.mark.parametrize("lines", DUPLICATES.values(), ids=DUPLICATES.keys())
@pytest.mark.parametrize("path", ["/dashboard", "/hello"], ids=["protected", "public"])
async def test_duplicate_session_cookie_is_refused_with_400(
    gw: Gw, path: str, lines: tuple[str, ...]
) -> None:
    """The session cookie sent twice (one header or two) is ambiguous and refused with 400."""
    response, entry = await send(gw, path, *lines)
    assert response.status == 400, response.raw_head
    assert_refused(gw, response, entry)


MALFORMED: dict[str, str] = {
    "space-inside": f"Cookie: session={GOOD} extra",
    "quote-inside": f'Cookie: session=ab"{GOOD}',
    "trailing-quote": f'Cookie: session={GOOD}"',
    "unbalanced-quote": f'Cookie: session="{GOOD}',
    "empty-quotes": 'Cookie: session=""',
    "backslash": f"Cookie: session={GOOD}\\x",
    "comma": f"Cookie: session={GOOD},x",
    "non-ascii": f"Cookie: session={GOOD}\xe9",
    "quoted-semicolon": f'Cookie: session="{GOOD}; x=1"',
    "del-character": f"Cookie: session={GOOD}\x7f",
}


@pytest.mark.parametrize("line", MALFORMED.values(), ids=MALFORMED.keys())
async def test_malformed_session_cookie_is_refused(gw: Gw, line: str) -> None:
    """A session value a strict parser drops and a lax one keeps is refused, never validated."""
    response, entry = await send(gw, "/dashboard", line)
    assert response.status == 400, response.raw_head
    assert_refused(gw, response, entry)


OVERSIZED: dict[str, tuple[str, ...]] = {
    "over-4k-value": ("Cookie: session=" + "a" * 4097,),
    "over-header-line-limit": ("Cookie: session=" + "a" * 9000,),
    "huge-other-cookie": ("Cookie: pad=" + "p" * 9000 + f"; session={GOOD}",),
    "many-headers-over-total": (
        *(f"Cookie: pad{n}=" + "p" * 7000 for n in range(5)),
        f"Cookie: session={GOOD}",
    ),
}


@pytest.mark.parametrize("lines", OVERSIZED.values(), ids=OVERSIZED.keys())
async def test_oversized_cookies_are_refused_without_validation(
    gw: Gw, lines: tuple[str, ...]
) -> None:
    """Oversized cookies are refused (400 or 431) before any validation or relaying."""
    response, entry = await send(gw, "/dashboard", *lines)
    assert response.status in (400, 431), response.raw_head
    assert_refused(gw, response, entry)


# Junk around the session cookie and same-name spellings: each is either validated as exactly
# what the frontend reads, or refused. None may validate one value and relay another.
AROUND: dict[str, str] = {
    "quote-junk-before": f'Cookie: a"b; session={GOOD}',
    "empty-pairs-before": f"Cookie: ;;; session={GOOD}",
    "empty-name-before": f"Cookie: =x; session={GOOD}",
    "double-equals-before": f"Cookie: a=b=c; session={GOOD}",
    "bare-name-before": f"Cookie: a; session={GOOD}",
    "lone-quote-before": f'Cookie: "; session={GOOD}',
    "open-quote-before": f'Cookie: a="x; session={GOOD}',
    "trailing-semicolon": f"Cookie: session={GOOD};",
    "between-others": f"Cookie: a=1; session={GOOD}; b=2",
    "leading-space-name": f"Cookie:  session={GOOD}",
    "no-space-after-semicolon": f"Cookie: a=1;session={GOOD}",
    "space-before-equals": f"Cookie: session ={GOOD}",
    "quoted-value": f'Cookie: session="{GOOD}"',
    "comma-hidden-copy-after": f"Cookie: session={GOOD}; a=1, session={OTHER}",
    "space-hidden-copy-after": f"Cookie: session={GOOD}; a=1 session={OTHER}",
}
MUST_PASS = {
    "leading-space-name",
    "between-others",
    "trailing-semicolon",
    "no-space-after-semicolon",
}


@pytest.mark.parametrize("name", AROUND.keys())
async def test_validated_session_is_what_the_frontend_reads(gw: Gw, name: str) -> None:
    """Junk around the session cookie never splits what is validated from what is relayed."""
    response, entry = await send(gw, "/dashboard", AROUND[name])
    if response.status == 400 and name not in MUST_PASS:
        assert_refused(gw, response, entry)
        return
    assert response.status == 200, response.raw_head
    assert entry is not None
    assert len(gw.api.calls) == 1
    assert (validated_value(gw.api.calls[0]), frontend_reads(entry)) == (GOOD, GOOD)
    assert header_values(entry["headers"], "X-Auth-User-Id") == ["u-42"]


# What a client adds around a valid session; none of it may reach the auth API.
CLIENT_EXTRAS = (
    "Authorization: Bearer client-bearer-token",
    "Proxy-Authorization: Basic Y2xpZW50OnNlY3JldA==",
    "User-Agent: evil-agent/6.6",
    "X-Forwarded-For: 9.9.9.9",
    "X-Real-IP: 9.9.9.9",
    "X-Auth-User-Id: evil",
    "Origin: http://evil.test",
    "Referer: http://evil.test/page",
    "Accept-Language: fr",
    "X-Api-Key: client-api-key",
    "X-Csrf-Token: client-csrf",
    "Content-Type: text/plain",
)
VALIDATION_COOKIES: dict[str, tuple[str, ...]] = {
    "alone": (f"Cookie: session={GOOD}",),
    "among-others": (f"Cookie: tracking=t-1; session={GOOD}; csrftoken=c-2; theme=dark",),
    "others-in-second-header": (f"Cookie: session={GOOD}", "Cookie: tracking=t-1; csrftoken=c-2"),
    "leading-space": (f"Cookie:  session={GOOD}; tracking=t-1",),
}
# Host and what HTTP framing may need are allowed besides the four the contract names.
ALLOWED_ON_VALIDATION = {
    "cookie",
    "user-agent",
    "x-forwarded-for",
    "x-request-id",
    "host",
    "content-length",
    "connection",
}


@pytest.mark.parametrize("with_extras", [False, True], ids=["plain", "with-client-extras"])
@pytest.mark.parametrize("lines", VALIDATION_COOKIES.values(), ids=VALIDATION_COOKIES.keys())
async def test_validation_call_carries_only_the_session_cookie(
    gw: Gw, lines: tuple[str, ...], with_extras: bool
) -> None:
    """The auth API gets Cookie: session=<value>, the gateway's UA, XFF and request id, no more."""
    extras = CLIENT_EXTRAS if with_extras else ()
    response, entry = await send(gw, "/dashboard", *lines, *extras, "X-Request-ID: rid-cookie-1")
    assert response.status == 200, response.raw_head
    assert entry is not None
    assert len(gw.api.calls) == 1
    headers: list[list[str]] = gw.api.calls[-1]["headers"]
    names = [k.lower() for k, _ in headers]
    assert set(names) <= ALLOWED_ON_VALIDATION, names
    assert len(names) == len(set(names)), names
    assert header_values(headers, "Cookie") == [f"session={GOOD}"]
    assert header_values(headers, "User-Agent") == [USER_AGENT]
    assert header_values(headers, "X-Forwarded-For") == ["127.0.0.1"]
    assert header_values(headers, "X-Request-ID") == ["rid-cookie-1"]
    joined = repr(headers)
    for leaked in ("tracking", "csrftoken", "client-", "evil", "9.9.9.9", "Y2xpZW50"):
        assert leaked not in joined


@pytest.mark.parametrize(
    "token, expected",
    [(GOOD, 200), ("api-500", 503), ("unknown-token-123456", 302)],
    ids=["valid", "auth-error", "denied"],
)
async def test_validated_exactly_once_per_request(gw: Gw, token: str, expected: int) -> None:
    """One request with one session cookie makes at most one validation call, for that value."""
    response, _ = await send(gw, "/dashboard", f"Cookie: a=1; session={token}; b=2")
    assert response.status == expected
    assert len(gw.api.calls) == 1
    assert validated_value(gw.api.calls[0]) == token
