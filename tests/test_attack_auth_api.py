"""Attack class 4, the auth API lying or failing: anything but a clear yes is never a pass.

Redirects (not followed), server errors, odd statuses, bodies that are not a JSON object, unsafe
characters in identity fields, timeouts, refused and reset connections: the client gets 503 and the
frontend is never contacted. 401 and 403 are a clear no: the login redirect or a 401 JSON answer.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest

from tests.support import rawhttp
from tests.support.backends import PROTECTED_MARKER, RawUpstream
from tests.support.harness import GOOD, GatewayFactory, Gw
from tests.support.process import free_port

HOST = "gateway.test"
IDENTITY = ("x-auth-user-id", "x-auth-user-email")


async def send(
    gw: Gw, token: str, *, accept: str = "text/html", path: str = "/dashboard", extra: str = ""
) -> rawhttp.RawResponse:
    lines = [f"Accept: {accept}", f"Cookie: session={token}"]
    if extra:
        lines.append(extra)
    return await rawhttp.exchange(gw.port, rawhttp.get(path, *lines, host=HOST))


def identity_of(entry: dict[str, Any]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for name, value in entry["headers"]:
        if name.lower().startswith("x-auth-"):
            out.setdefault(name.lower(), []).append(value)
    return out


def assert_unavailable(gw: Gw, response: rawhttp.RawResponse) -> None:
    """503, nothing relayed, no protected content."""
    assert response.status == 503, response.raw_head
    assert gw.seen.seen == []
    assert PROTECTED_MARKER.encode() not in response.body
    assert b"u-42" not in response.body


MISBEHAVING = {
    "api-302": "redirect (not followed)",
    "api-500": "server error",
    "api-404": "not found",
    "api-nonjson": "HTML body",
    "api-empty-body": "200 with an empty body",
    "api-array": "JSON array",
    "api-crlf": "CR LF in the id",
    "api-lf": "LF in the email",
    "api-nul": "NUL in the id",
    "api-reset": "connection reset mid-body",
}
ACCEPTS = {"html": "text/html", "json": "application/json", "none": ""}


@pytest.mark.parametrize("accept", ACCEPTS.values(), ids=ACCEPTS.keys())
@pytest.mark.parametrize("token", MISBEHAVING.keys())
async def test_misbehaving_auth_api_is_never_a_pass(gw: Gw, token: str, accept: str) -> None:
    """Each way the test auth API misbehaves gives the client 503 and never reaches the frontend."""
    response = await send(gw, token, accept=accept)
    assert_unavailable(gw, response)
    assert len(gw.api.calls) == 1


@pytest.mark.parametrize("token", ["api-crlf", "api-lf", "api-nul"])
async def test_unsafe_identity_value_is_never_injected(gw: Gw, token: str) -> None:
    """CR, LF or NUL in an identity field never becomes a header anywhere; the answer is 503."""
    response = await send(gw, token)
    assert_unavailable(gw, response)
    assert b"X-Injected" not in response.raw_head
    assert b"X-Injected" not in response.body


@pytest.mark.parametrize("token", ["api-500", "api-nonjson", "api-reset"])
async def test_auth_error_is_not_remembered_as_a_pass(gw: Gw, token: str) -> None:
    """A failed validation is not cached into a yes: asking again fails closed again."""
    for _ in range(3):
        assert_unavailable(gw, await send(gw, token))


@pytest.mark.parametrize("accept", ACCEPTS.values(), ids=ACCEPTS.keys())
async def test_valid_answer_after_the_timeout_is_503(gw: Gw, accept: str) -> None:
    """A yes that arrives after the 1 s auth timeout is no yes: 503, the frontend not contacted."""
    # The api-slow token sleeps 30 s and holds the auth fixture's teardown as long; a delay just
    # over the timeout on a valid session takes the same path and makes a stronger claim.
    gw.api.delay = 1.4
    started = time.monotonic()
    response = await send(gw, GOOD, accept=accept)
    assert time.monotonic() - started < 1.35
    assert_unavailable(gw, response)


async def test_auth_api_that_never_answers_is_503(gateway_factory: GatewayFactory) -> None:
    """An auth API that accepts the connection and never answers gives 503 after the timeout."""
    release = asyncio.Event()

    async def hang(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await release.wait()
        writer.close()

    server = await asyncio.start_server(hang, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        gw = await gateway_factory(auth=f"http://127.0.0.1:{port}")
        started = time.monotonic()
        assert_unavailable(gw, await send(gw, GOOD))
        assert 0.9 < time.monotonic() - started < 3
    finally:
        release.set()
        server.close()
        await server.wait_closed()


async def test_refused_connection_is_503(gateway_factory: GatewayFactory) -> None:
    """An auth API that refuses connections (a closed port) gives 503, nothing relayed."""
    gw = await gateway_factory(auth=f"http://127.0.0.1:{free_port()}")
    for accept in ACCEPTS.values():
        assert_unavailable(gw, await send(gw, GOOD, accept=accept))


async def test_unresolvable_auth_host_is_503(gateway_factory: GatewayFactory) -> None:
    """An auth API host that does not resolve gives 503, nothing relayed."""
    gw = await gateway_factory(auth="http://auth.invalid:1")
    assert_unavailable(gw, await send(gw, GOOD))


def raw(status_line: str, *headers: str, body: bytes = b"", length: int | None = None) -> bytes:
    size = len(body) if length is None else length
    lines = [status_line, *headers, f"Content-Length: {size}", "", ""]
    return "\r\n".join(lines).encode() + body


def json_raw(value: Any, status: str = "200 OK") -> bytes:
    return raw(
        f"HTTP/1.1 {status}", "Content-Type: application/json", body=json.dumps(value).encode()
    )


USER = {"id": "u-42", "email": "ada@example.com"}
BIG_USER = {**USER, "padding": "p" * (70 * 1024)}
# What a lying or broken auth API sends, byte for byte; every one must end in 503.
RAW_FAILURES: dict[str, bytes] = {
    "301": raw("HTTP/1.1 301 Moved Permanently", "Location: {validate}"),
    "302": raw("HTTP/1.1 302 Found", "Location: {validate}"),
    "303": raw("HTTP/1.1 303 See Other", "Location: {validate}"),
    "307": raw("HTTP/1.1 307 Temporary Redirect", "Location: {validate}"),
    "308": raw("HTTP/1.1 308 Permanent Redirect", "Location: {validate}"),
    "302-with-user-body": json_raw(USER, "302 Found"),
    "304": b"HTTP/1.1 304 Not Modified\r\n\r\n",
    "204": b"HTTP/1.1 204 No Content\r\n\r\n",
    "400": json_raw(USER, "400 Bad Request"),
    "404-with-user-body": json_raw(USER, "404 Not Found"),
    "407": json_raw({"error": "proxy auth"}, "407 Proxy Authentication Required"),
    "429": json_raw({"error": "slow down"}, "429 Too Many Requests"),
    "500-with-user-body": json_raw(USER, "500 Internal Server Error"),
    "502": raw("HTTP/1.1 502 Bad Gateway"),
    "503": raw("HTTP/1.1 503 Service Unavailable"),
    "504": raw("HTTP/1.1 504 Gateway Timeout"),
    "json-null": json_raw(None),
    "json-string": json_raw("u-42"),
    "json-number": json_raw(42),
    "json-true": json_raw(True),
    "json-array-of-user": json_raw([USER]),
    "json-trailing-comma": raw("HTTP/1.1 200 OK", body=b'{"id": "u-42",}'),
    "json-truncated": raw("HTTP/1.1 200 OK", body=b'{"id": "u-42", "email'),
    "json-two-documents": raw("HTTP/1.1 200 OK", body=b'{"id": "u-1"}{"id": "u-2"}'),
    "html": raw("HTTP/1.1 200 OK", "Content-Type: text/html", body=b"<html>welcome</html>"),
    "not-utf8": raw("HTTP/1.1 200 OK", body=b'{"id": "\xff\xfe"}'),
    "escaped-cr-lf": raw("HTTP/1.1 200 OK", body=b'{"id": "u-1\\r\\nX-Injected: yes"}'),
    "escaped-nul-in-email": raw("HTTP/1.1 200 OK", body=b'{"id": "u-1", "email": "a\\u0000b"}'),
    "cut-before-length": raw("HTTP/1.1 200 OK", body=b'{"id": "u-42"', length=500),
    "chunked-cut": b'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n10\r\n{"id": "u-42", ',
    "oversized-body": json_raw(BIG_USER),
    "garbage-status-line": b"HELLO THERE\r\n\r\n",
    "no-answer-at-all": b"",
    "http-0.9-style-body": b'{"id": "u-42"}',
}


@pytest.mark.parametrize("answer", RAW_FAILURES.values(), ids=RAW_FAILURES.keys())
async def test_lying_auth_api_is_never_a_pass(
    gateway_factory: GatewayFactory,
    raw_upstream: tuple[RawUpstream, int],
    answer: bytes,
) -> None:
    """Any answer but a 2xx JSON object with safe fields (or 401/403) is 503, nothing relayed."""
    fake, port = raw_upstream
    gw = await gateway_factory(auth=f"http://127.0.0.1:{port}")
    validate = f"{gw.auth.url}/api/auth/sessions/validate"
    fake.response = answer.replace(b"{validate}", validate.encode())
    response = await send(gw, GOOD)
    assert_unavailable(gw, response)
    assert len(fake.received) >= 1
    # A redirect to the real auth API, which would say yes, is never followed.
    assert gw.api.calls == []


# 401 and 403 are a clear no, whatever body comes with them.
RAW_DENIALS: dict[str, bytes] = {
    "401-with-user-body": json_raw(USER, "401 Unauthorized"),
    "403-with-user-body": json_raw(USER, "403 Forbidden"),
    "401-empty": raw("HTTP/1.1 401 Unauthorized"),
    "403-html": raw("HTTP/1.1 403 Forbidden", "Content-Type: text/html", body=b"<p>no</p>"),
}


@pytest.mark.parametrize("answer", RAW_DENIALS.values(), ids=RAW_DENIALS.keys())
async def test_raw_401_and_403_are_a_denial_whatever_the_body(
    gateway_factory: GatewayFactory, raw_upstream: tuple[RawUpstream, int], answer: bytes
) -> None:
    """A 401 or 403 from the auth API denies even when its body looks like a user."""
    fake, port = raw_upstream
    gw = await gateway_factory(auth=f"http://127.0.0.1:{port}")
    fake.response = answer
    response = await send(gw, GOOD)
    assert response.status == 302
    assert gw.seen.seen == []


DENIED_TOKENS = {"unknown-token": "not-a-session-0000000000", "api-403": "api-403"}


@pytest.mark.parametrize("token", DENIED_TOKENS.values(), ids=DENIED_TOKENS.keys())
@pytest.mark.parametrize(
    "accept",
    ["text/html", "text/html,application/xhtml+xml,*/*;q=0.8", ""],
    ids=["html", "browser-accept", "empty-accept"],
)
async def test_denied_session_redirects_a_browser_to_login(gw: Gw, token: str, accept: str) -> None:
    """401 or 403 from the auth API sends a browser to the login page, nothing relayed."""
    response = await send(gw, token, accept=accept, path="/settings/x?a=1")
    assert response.status == 302
    assert response.header("Location") == "/login?next=%2Fsettings%2Fx%3Fa%3D1"
    assert gw.seen.seen == []
    assert len(gw.api.calls) == 1


@pytest.mark.parametrize("token", DENIED_TOKENS.values(), ids=DENIED_TOKENS.keys())
@pytest.mark.parametrize(
    "accept, extra",
    [
        ("application/json", ""),
        ("text/html;q=0, application/json", ""),
        ("text/html", "X-Requested-With: XMLHttpRequest"),
    ],
    ids=["json", "html-refused", "xhr"],
)
async def test_denied_session_gives_a_script_401_json(
    gw: Gw, token: str, accept: str, extra: str
) -> None:
    """401 or 403 from the auth API gives a script a 401 JSON answer, nothing relayed."""
    response = await send(gw, token, accept=accept, extra=extra)
    assert response.status == 401
    assert (response.header("Content-Type") or "").startswith("application/json")
    body = json.loads(response.body)
    assert body["status"] == 401
    assert gw.seen.seen == []
    assert len(gw.api.calls) == 1


async def test_scalar_claims_become_their_string_form(gateway_factory: GatewayFactory) -> None:
    """api-scalars: 7 -> "7", true -> "true", a dotted scalar is sent; objects and lists are not."""
    gw = await gateway_factory(
        auth={
            "identity_headers": {
                "X-Auth-User-Id": "id",
                "X-Auth-User-Email": "email",
                "X-Auth-Org": "nested",
                "X-Auth-Org-Name": "nested.org",
                "X-Auth-List": "list",
                "X-Auth-Obj": "obj",
                "X-Auth-Missing": "nope",
            }
        }
    )
    response = await send(gw, "api-scalars")
    assert response.status == 200, response.raw_head
    entry = gw.seen.seen[-1]
    assert identity_of(entry) == {
        "x-auth-user-id": ["7"],
        "x-auth-user-email": ["true"],
        "x-auth-org-name": ["hamrah"],
    }


# (JSON body the raw auth API sends, identity headers the frontend must get)
RAW_PASSES: dict[str, tuple[bytes, dict[str, list[str]]]] = {
    "null-field": (b'{"id": null, "email": "a@b.c"}', {"x-auth-user-email": ["a@b.c"]}),
    "float-false": (
        b'{"id": 1.5, "email": false}',
        {"x-auth-user-id": ["1.5"], "x-auth-user-email": ["false"]},
    ),
    "zero-and-empty": (
        b'{"id": 0, "email": ""}',
        {"x-auth-user-id": ["0"], "x-auth-user-email": [""]},
    ),
    "object-and-list": (b'{"id": {"x": 1}, "email": ["a@b.c"]}', {}),
    "extra-fields-ignored": (
        b'{"id": "u-9", "email": "z@y.x", "X-Auth-User-Id": "spoof", "role": "admin"}',
        {"x-auth-user-id": ["u-9"], "x-auth-user-email": ["z@y.x"]},
    ),
}


@pytest.mark.parametrize("case", RAW_PASSES.values(), ids=RAW_PASSES.keys())
async def test_identity_headers_follow_the_claims_exactly(
    gateway_factory: GatewayFactory,
    raw_upstream: tuple[RawUpstream, int],
    case: tuple[bytes, dict[str, list[str]]],
) -> None:
    """A 200 JSON object passes; only scalar fields become identity headers, as strings."""
    body, expected = case
    fake, port = raw_upstream
    gw = await gateway_factory(auth=f"http://127.0.0.1:{port}")
    fake.response = raw("HTTP/1.1 200 OK", "Content-Type: application/json", body=body)
    response = await send(gw, GOOD, extra="X-Auth-User-Id: client-spoof")
    assert response.status == 200, response.raw_head
    assert identity_of(gw.seen.seen[-1]) == expected


async def test_session_json_without_fields_passes_with_no_identity(gw: Gw) -> None:
    """api-empty-object: 200 through, and no identity header at all reaches the frontend."""
    response = await send(gw, "api-empty-object", extra="X-Auth-User-Id: client-spoof")
    assert response.status == 200, response.raw_head
    assert PROTECTED_MARKER.encode() in response.body
    assert identity_of(gw.seen.seen[-1]) == {}
