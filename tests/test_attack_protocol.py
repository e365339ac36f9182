"""Attack class 5: the HTTP/1.1 protocol itself, over raw sockets.

Request smuggling (CL+TE, duplicate Content-Length, obfuscated Transfer-Encoding, invalid chunk
sizes, bare CR/LF, a space before the colon), h2c and WebSocket upgrades, and oversized or too many
headers. Each ambiguous message gets 400 (or 431/414 where named) or a closed connection; nothing
hidden in it ever reaches the frontend as a request of its own; and the next connection is served
normally.
"""

from __future__ import annotations

import asyncio
import hashlib
import json

import pytest

from tests.support import rawhttp
from tests.support.backends import PROTECTED_MARKER
from tests.support.harness import GOOD, Gw, protected_seen

HOST = "Host: gateway.test"
SESSION = f"Cookie: session={GOOD}"
# How long the gateway has to end a connection it must not keep.
CLOSE_DEADLINE = 5.0
# The request hidden inside each smuggling attempt: a protected page, no session.
SMUGGLED = b"GET /dashboard/smuggled HTTP/1.1\r\nHost: gateway.test\r\n\r\n"
WS_KEY = "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ=="
WS_VERSION = "Sec-WebSocket-Version: 13"
H2_SETTINGS = "HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA"
H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def head(*lines: str) -> bytes:
    """A request head: the given lines, CRLF-terminated, then the empty line."""
    return "".join(line + "\r\n" for line in lines).encode("latin-1") + b"\r\n"


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


LAST_CHUNK = b"0\r\n\r\n"
# A chunked body that ends where a Transfer-Encoding reader stops, with SMUGGLED right after it.
CHUNKED_THEN_SMUGGLED = LAST_CHUNK + SMUGGLED
# A chunked body that carries SMUGGLED inside a chunk (what a Content-Length reader stops short of).
SMUGGLED_IN_CHUNK = chunk(SMUGGLED) + LAST_CHUNK


def post(*header_lines: str, body: bytes, target: str = "/upload") -> bytes:
    return head(f"POST {target} HTTP/1.1", HOST, *header_lines) + body


def cl_te(te_line: str) -> bytes:
    """CL.TE: Content-Length covers everything, the TE reader stops before SMUGGLED."""
    length = len(CHUNKED_THEN_SMUGGLED)
    return post(f"Content-Length: {length}", te_line, body=CHUNKED_THEN_SMUGGLED)


def te_cl(te_line: str) -> bytes:
    """TE.CL: Transfer-Encoding covers everything, the CL reader stops before SMUGGLED."""
    first_line = len(SMUGGLED_IN_CHUNK.split(b"\r\n", 1)[0]) + 2
    return post(te_line, f"Content-Length: {first_line}", body=SMUGGLED_IN_CHUNK)


def cl_cl(*cl_lines: str) -> bytes:
    """Two lengths: the short one stops before SMUGGLED, the long one swallows it."""
    return post(*cl_lines, body=b"hello" + SMUGGLED)


def bad_chunk(size_line: bytes) -> bytes:
    """A chunked body whose first chunk-size line is `size_line`, then SMUGGLED."""
    body = size_line + b"\r\nhello\r\n" + LAST_CHUNK + SMUGGLED
    return post("Transfer-Encoding: chunked", body=body)


def attack(case_id: str, data: bytes) -> object:
    return pytest.param(data, id=case_id)


SHORT = len(b"hello")
LONG = len(b"hello" + SMUGGLED)

# Each of these must get 400 (or a closed connection), and the connection must end.
FRAMING_ATTACKS = [
    # Content-Length and Transfer-Encoding together, in both orders.
    attack("cl-te", cl_te("Transfer-Encoding: chunked")),
    attack("te-cl", te_cl("Transfer-Encoding: chunked")),
    attack(
        "cl-te-zero-length",
        post("Content-Length: 0", "Transfer-Encoding: chunked", body=CHUNKED_THEN_SMUGGLED),
    ),
    attack(
        "cl-te-get",
        head(
            "GET / HTTP/1.1",
            HOST,
            f"Content-Length: {len(CHUNKED_THEN_SMUGGLED)}",
            "Transfer-Encoding: chunked",
        )
        + CHUNKED_THEN_SMUGGLED,
    ),
    # Duplicate Content-Length, differing or equal, as two lines or one list.
    attack("cl-cl-short-long", cl_cl(f"Content-Length: {SHORT}", f"Content-Length: {LONG}")),
    attack("cl-cl-long-short", cl_cl(f"Content-Length: {LONG}", f"Content-Length: {SHORT}")),
    attack("cl-cl-equal", cl_cl(f"Content-Length: {SHORT}", f"Content-Length: {SHORT}")),
    attack("cl-list-differing", cl_cl(f"Content-Length: {SHORT}, {LONG}")),
    attack("cl-list-equal", cl_cl(f"Content-Length: {SHORT}, {SHORT}")),
    attack("cl-case-duplicate", cl_cl(f"Content-Length: {SHORT}", f"content-length: {LONG}")),
    # Content-Length that is not a plain decimal.
    attack("cl-negative", cl_cl("Content-Length: -1")),
    attack("cl-plus-sign", cl_cl(f"Content-Length: +{SHORT}")),
    attack("cl-hex", cl_cl(f"Content-Length: 0x{SHORT:x}")),
    attack("cl-inner-space", cl_cl(f"Content-Length: {SHORT} {LONG}")),
    attack("cl-trailing-junk", cl_cl(f"Content-Length: {SHORT}a")),
    attack("cl-overflow", cl_cl("Content-Length: 99999999999999999999999999")),
    # Obfuscated Transfer-Encoding next to a Content-Length (CL.TE and TE.CL).
    attack("te-xchunked-cl", cl_te("Transfer-Encoding: xchunked")),
    attack("te-leading-space-cl", cl_te("Transfer-Encoding:  chunked")),
    attack("te-chunked-identity-cl", cl_te("Transfer-Encoding: chunked, identity")),
    attack("te-identity-chunked-cl", cl_te("Transfer-Encoding: identity, chunked")),
    attack("te-tab-cl", cl_te("Transfer-Encoding:\tchunked")),
    attack("te-vtab-cl", cl_te("Transfer-Encoding:\x0bchunked")),
    attack("te-formfeed-cl", cl_te("Transfer-Encoding:\x0cchunked")),
    attack("te-quoted-cl", cl_te('Transfer-Encoding: "chunked"')),
    attack("te-upper-cl", cl_te("TRANSFER-ENCODING: CHUNKED")),
    attack("te-nul-cl", cl_te("Transfer-Encoding: chunked\x00")),
    attack("te-xchunked-te-cl", te_cl("Transfer-Encoding: xchunked")),
    attack("te-tab-te-cl", te_cl("Transfer-Encoding:\tchunked")),
    attack("te-vtab-te-cl", te_cl("Transfer-Encoding:\x0bchunked")),
    attack("te-duplicate-cl", cl_te("Transfer-Encoding: chunked\r\nTransfer-Encoding: identity")),
    attack("te-space-before-colon-cl", cl_te("Transfer-Encoding : chunked")),
    attack("te-tab-before-colon-cl", cl_te("Transfer-Encoding\t: chunked")),
    attack("te-obs-fold-cl", cl_te("Transfer-Encoding:\r\n chunked")),
    attack("te-obs-fold-tab-cl", cl_te("X-Padding: x\r\n\tTransfer-Encoding: chunked")),
    attack("te-leading-space-line-cl", cl_te("X-Padding: x\r\n Transfer-Encoding: chunked")),
    # Transfer-Encoding alone, but not ending in chunked or not readable as such.
    attack("te-xchunked", post("Transfer-Encoding: xchunked", body=CHUNKED_THEN_SMUGGLED)),
    attack(
        "te-chunked-identity",
        post("Transfer-Encoding: chunked, identity", body=CHUNKED_THEN_SMUGGLED),
    ),
    attack("te-identity", post("Transfer-Encoding: identity", body=CHUNKED_THEN_SMUGGLED)),
    attack(
        "te-chunked-twice-list",
        post("Transfer-Encoding: chunked, chunked", body=CHUNKED_THEN_SMUGGLED),
    ),
    attack("te-vtab", post("Transfer-Encoding:\x0bchunked", body=CHUNKED_THEN_SMUGGLED)),
    attack("te-chunk-misspelt", post("Transfer-Encoding: chunk", body=CHUNKED_THEN_SMUGGLED)),
    # Invalid chunk sizes.
    attack("chunk-size-non-hex", bad_chunk(b"zz")),
    attack("chunk-size-negative", bad_chunk(b"-5")),
    attack("chunk-size-hex-prefix", bad_chunk(b"0x5")),
    attack("chunk-size-leading-space", bad_chunk(b" 5")),
    attack("chunk-size-overflow", bad_chunk(b"1" + b"0" * 20)),
    attack("chunk-size-empty", bad_chunk(b"")),
    attack("chunk-size-plus", bad_chunk(b"+5")),
    attack(
        "chunk-size-bare-lf",
        post("Transfer-Encoding: chunked", body=b"5\nhello\r\n" + LAST_CHUNK + SMUGGLED),
    ),
    attack(
        "chunk-data-too-long",
        post("Transfer-Encoding: chunked", body=b"3\r\nhello\r\n" + LAST_CHUNK + SMUGGLED),
    ),
    attack(
        "chunk-data-missing-crlf",
        post("Transfer-Encoding: chunked", body=b"5\r\nhelloXX" + LAST_CHUNK + SMUGGLED),
    ),
    attack(
        "chunk-last-bad-terminator", post("Transfer-Encoding: chunked", body=b"0\r\nX" + SMUGGLED)
    ),
    # Bare CR or bare LF among the headers.
    attack("bare-cr-between-headers", head("GET / HTTP/1.1", HOST, "X-A: a\rX-B: b")),
    attack("bare-cr-in-value", head("GET / HTTP/1.1", HOST, "X-A: a\rb")),
    attack("bare-cr-smuggles-te", cl_te("X-A: a\rTransfer-Encoding: chunked")),
    attack("bare-lf-smuggles-te", cl_te("X-A: a\nTransfer-Encoding: chunked")),
    attack(
        "bare-lf-smuggles-cl",
        post(
            f"X-A: a\nContent-Length: {LONG}", f"Content-Length: {SHORT}", body=b"hello" + SMUGGLED
        ),
    ),
    attack("bare-lf-header-terminator", head("GET / HTTP/1.1", HOST + "\nX-A: b")),
    attack("bare-lf-everywhere", b"GET / HTTP/1.1\nHost: gateway.test\nX-A: b\n\n"),
    attack("bare-cr-request-line", b"GET / HTTP/1.1\rHost: gateway.test\r\n\r\n"),
    attack("bare-cr-end-of-head", head("GET / HTTP/1.1", HOST)[:-2] + b"\r" + SMUGGLED),
    # A space (or other junk) in or before the colon of a header name.
    attack(
        "name-space-before-colon-cl", post(f"Content-Length : {LONG}", body=b"hello" + SMUGGLED)
    ),
    attack("name-space-before-colon-host", head("GET / HTTP/1.1", "Host : gateway.test")),
    attack("name-space-before-colon", head("GET / HTTP/1.1", HOST, "X-Test : 1")),
    attack("name-inner-space", head("GET / HTTP/1.1", HOST, "X Test: 1")),
    attack("name-empty", head("GET / HTTP/1.1", HOST, ": 1")),
    attack("name-no-colon", head("GET / HTTP/1.1", HOST, "X-Test")),
    attack("name-control-char", head("GET / HTTP/1.1", HOST, "X-\x01Test: 1")),
    attack("name-non-token", head("GET / HTTP/1.1", HOST, "X(Test): 1")),
    attack("value-nul", head("GET / HTTP/1.1", HOST, "X-Test: a\x00b")),
    # Request lines that cannot be read as HTTP/1.1.
    attack("line-http2-preface", H2_PREFACE),
    attack("line-version-junk", head("GET / HTTP/1.1x", HOST)),
    attack("line-version-missing-minor", head("GET / HTTP/1", HOST)),
    attack("line-lower-method", head("get / HTTP/1.1", HOST)),
]

# Versions this gateway does not speak: refused (400, or 505 as RFC 9110 offers), never answered
# as if they were HTTP/1.x with a made-up status line.
FOREIGN_VERSIONS = [
    attack("version-2", head("GET / HTTP/2.0", HOST)),
    attack("version-2-protected", head("GET /dashboard HTTP/2.0", HOST)),
    attack("version-3", head("GET / HTTP/3.0", HOST)),
    attack("version-0.9-simple-request", b"GET /\r\n\r\n"),
    attack("version-0.9-then-smuggled", b"GET /\r\n" + SMUGGLED),
]

# Valid, if unusual, messages: each is one request, relayed as one with exactly this body.
UNAMBIGUOUS = [
    pytest.param(
        post(f"Content-Length: {LONG}", "Transfer_Encoding: chunked", body=b"hello" + SMUGGLED),
        b"hello" + SMUGGLED,
        id="te-underscore-name-is-another-header",
    ),
    pytest.param(
        post(f"Content-Length: {LONG}", "X-Transfer-Encoding: chunked", body=b"hello" + SMUGGLED),
        b"hello" + SMUGGLED,
        id="te-lookalike-name",
    ),
    pytest.param(
        post("Transfer-Encoding: chunked", body=SMUGGLED_IN_CHUNK),
        SMUGGLED,
        id="smuggled-request-as-chunk-data",
    ),
    pytest.param(
        post("Transfer-Encoding: chunked", body=b"5;ext=1\r\nhello\r\n" + LAST_CHUNK),
        b"hello",
        id="chunk-extension",
    ),
    pytest.param(
        post(f"Content-Length: {LONG}", body=b"hello" + SMUGGLED),
        b"hello" + SMUGGLED,
        id="smuggled-request-as-body",
    ),
    pytest.param(
        head("GET / HTTP/1.1", HOST, f"Content-Length: {len(SMUGGLED)}") + SMUGGLED,
        SMUGGLED,
        id="get-with-body",
    ),
]


async def read_until_closed(
    reader: asyncio.StreamReader, responses: list[rawhttp.RawResponse]
) -> None:
    """Append every response to `responses` until the gateway closes the connection; fail if it
    is still open after CLOSE_DEADLINE."""
    try:
        async with asyncio.timeout(CLOSE_DEADLINE):
            while True:
                try:
                    responses.append(await rawhttp.read_response(reader))
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
    except TimeoutError:
        statuses = [r.status for r in responses]
        raise AssertionError(
            f"connection still open {CLOSE_DEADLINE}s later, after answers {statuses}"
        ) from None


async def converse(port: int, data: bytes) -> list[rawhttp.RawResponse]:
    """Send `data` on a new connection and read every response until the gateway closes it."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    responses: list[rawhttp.RawResponse] = []
    try:
        writer.write(data)
        await writer.drain()
        await read_until_closed(reader, responses)
        return responses
    finally:
        writer.close()


async def open_exchange(
    data: bytes, port: int, count: int
) -> tuple[list[rawhttp.RawResponse], asyncio.StreamReader, asyncio.StreamWriter]:
    """Send `data` on a new connection and read `count` responses, leaving it open."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    await writer.drain()
    async with asyncio.timeout(rawhttp.READ_DEADLINE):
        responses = [await rawhttp.read_response(reader) for _ in range(count)]
    return responses, reader, writer


async def answer_or_close(reader: asyncio.StreamReader) -> rawhttp.RawResponse | None:
    """The next response on a connection, or None when the gateway closes it instead; fails if
    neither happens within CLOSE_DEADLINE (the request would hang)."""
    try:
        async with asyncio.timeout(CLOSE_DEADLINE):
            return await rawhttp.read_response(reader)
    except (asyncio.IncompleteReadError, ConnectionError):
        return None
    except TimeoutError:
        raise AssertionError(
            f"neither an answer nor a close within {CLOSE_DEADLINE}s: the request hangs"
        ) from None


async def assert_served_normally(gw: Gw) -> None:
    """A fresh connection after the attack gets an ordinary answer from the frontend."""
    before = len(gw.seen.seen)
    response = await rawhttp.exchange(gw.port, rawhttp.get("/after-attack"))
    assert response.status == 200, response.raw_head
    assert [e["raw_path"] for e in gw.seen.seen[before:]] == ["/after-attack"]


async def wait_until_seen(gw: Gw, count: int) -> None:
    """Wait (with a deadline) until the frontend has received `count` requests."""
    async with asyncio.timeout(rawhttp.READ_DEADLINE):
        while len(gw.seen.seen) < count:
            await asyncio.sleep(0)


@pytest.mark.parametrize("data", FRAMING_ATTACKS)
async def test_framing_attack_is_refused_and_connection_closed(gw: Gw, data: bytes) -> None:
    """An ambiguous message gets 400 or a closed connection; nothing of it reaches the frontend."""
    responses = await converse(gw.port, data)
    assert [r.status for r in responses] in ([], [400]), [r.raw_head for r in responses]
    assert gw.seen.seen == []
    await assert_served_normally(gw)


@pytest.mark.parametrize("data", FOREIGN_VERSIONS)
async def test_foreign_http_version_is_refused(gw: Gw, data: bytes) -> None:
    """A request line claiming HTTP/0.9, /2 or /3 gets 400/505 or a close, and is not relayed."""
    responses = await converse(gw.port, data)
    assert [r.status for r in responses] in ([], [400], [505]), [r.raw_head for r in responses]
    assert gw.seen.seen == []
    await assert_served_normally(gw)


async def test_connect_is_refused_and_what_follows_is_judged(gw: Gw) -> None:
    """CONNECT gets 400; bytes after it are never tunnelled to the frontend unjudged."""
    data = head("CONNECT evil.com:443 HTTP/1.1", HOST) + SMUGGLED
    responses, reader, writer = await open_exchange(data, gw.port, 1)
    try:
        assert responses[0].status == 400, responses[0].raw_head
        follow = await answer_or_close(reader)
    finally:
        writer.close()
    assert follow is None or follow.status in (302, 400), follow.raw_head
    assert gw.seen.seen == []
    await assert_served_normally(gw)


@pytest.mark.parametrize(("data", "body"), UNAMBIGUOUS)
async def test_unambiguous_message_is_relayed_as_one_request(
    gw: Gw, data: bytes, body: bytes
) -> None:
    """A well-framed message carrying request-like bytes is one request with exactly its body."""
    responses, _, writer = await open_exchange(data, gw.port, 1)
    writer.close()
    assert responses[0].status == 200, responses[0].raw_head
    (entry,) = gw.seen.seen
    assert entry["body_length"] == len(body)
    assert entry["body_sha256"] == hashlib.sha256(body).hexdigest()
    assert protected_seen(gw) == []
    names = [name for name, _ in entry["headers"]]
    assert "Transfer_Encoding" not in names, names
    await assert_served_normally(gw)


async def test_pipelined_protected_request_is_judged_by_the_gateway(gw: Gw) -> None:
    """A second request pipelined behind a public one is authenticated like any other."""
    data = rawhttp.get("/first") + SMUGGLED
    responses, _, writer = await open_exchange(data, gw.port, 2)
    writer.close()
    assert [r.status for r in responses] == [200, 302]
    assert [e["raw_path"] for e in gw.seen.seen] == ["/first"]


async def test_invalid_chunk_after_streaming_started_is_refused(gw: Gw) -> None:
    """A bad chunk size arriving after the body started streaming ends in 400 or a close."""
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
    responses: list[rawhttp.RawResponse] = []
    try:
        writer.write(post("Transfer-Encoding: chunked", body=chunk(b"hello")))
        await writer.drain()
        await wait_until_seen(gw, 1)
        writer.write(b"zz\r\nhello\r\n" + LAST_CHUNK + SMUGGLED)
        await writer.drain()
        await read_until_closed(reader, responses)
    finally:
        writer.close()
    assert [r.status for r in responses] in ([], [400]), [r.raw_head for r in responses]
    assert [e["raw_path"] for e in gw.seen.seen] == ["/upload"]
    await assert_served_normally(gw)


H2C_UPGRADES = [
    pytest.param(("Connection: Upgrade, HTTP2-Settings", "Upgrade: h2c", H2_SETTINGS), id="h2c"),
    pytest.param(("Connection: upgrade", "Upgrade: h2c"), id="h2c-no-settings"),
    pytest.param(("Connection: HTTP2-Settings, Upgrade", "Upgrade: H2C", H2_SETTINGS), id="upper"),
    pytest.param(("Connection: Upgrade", "Upgrade: HTTP/2.0, h2c", H2_SETTINGS), id="list"),
    pytest.param(("Upgrade: h2c", H2_SETTINGS), id="without-connection"),
]


@pytest.mark.parametrize("headers", H2C_UPGRADES)
async def test_h2c_upgrade_is_not_honoured(gw: Gw, headers: tuple[str, ...]) -> None:
    """Upgrade: h2c gets a plain HTTP/1.1 answer (no 101), Upgrade is not forwarded, and the
    connection goes on speaking HTTP/1.1."""
    request = head("GET /h2c HTTP/1.1", HOST, *headers)
    responses, reader, writer = await open_exchange(request, gw.port, 1)
    try:
        first = responses[0]
        assert first.raw_head.startswith(b"HTTP/1.1 200 "), first.raw_head
        # The gateway may end the connection after answering, if it says so.
        keep_alive = (first.header("Connection") or "").lower() != "close"
        if keep_alive:
            writer.write(rawhttp.get("/after-h2c"))
            await writer.drain()
            async with asyncio.timeout(rawhttp.READ_DEADLINE):
                second = await rawhttp.read_response(reader)
            assert second.status == 200, second.raw_head
    finally:
        writer.close()
    entry = gw.seen.seen[0]
    names = {name.lower() for name, _ in entry["headers"]}
    assert "upgrade" not in names, entry["headers"]
    if "http2-settings" in headers[0].lower():
        assert "http2-settings" not in names, entry["headers"]
    connection = [v.lower() for n, v in entry["headers"] if n.lower() == "connection"]
    assert all("upgrade" not in value for value in connection), entry["headers"]
    assert [e["raw_path"] for e in gw.seen.seen] == ["/h2c", "/after-h2c"][: 1 + keep_alive]


AFTER_H2C = [
    pytest.param(rawhttp.get("/after-h2c"), id="plain-request"),
    pytest.param(H2_PREFACE + SMUGGLED, id="http2-preface-then-smuggled"),
    pytest.param(SMUGGLED, id="smuggled-protected"),
]


@pytest.mark.parametrize("follow", AFTER_H2C)
async def test_bytes_pipelined_after_h2c_upgrade_are_answered_or_closed(
    gw: Gw, follow: bytes
) -> None:
    """Bytes sent right behind an h2c upgrade request are read as HTTP/1.1 (answered) or the
    connection is closed; they are never silently swallowed, and never reach the frontend
    unjudged."""
    request = head(
        "GET /h2c HTTP/1.1",
        HOST,
        "Connection: Upgrade, HTTP2-Settings",
        "Upgrade: h2c",
        H2_SETTINGS,
    )
    responses, reader, writer = await open_exchange(request + follow, gw.port, 1)
    try:
        assert responses[0].raw_head.startswith(b"HTTP/1.1 200 "), responses[0].raw_head
        second = await answer_or_close(reader)
    finally:
        writer.close()
    if follow.startswith(b"GET /after-h2c"):
        assert second is None or second.status == 200, second.raw_head
    else:
        assert second is None or second.status in (400, 302), second.raw_head
    assert protected_seen(gw) == []
    assert gw.seen.seen[0]["raw_path"] == "/h2c"
    await assert_served_normally(gw)


@pytest.mark.parametrize("headers", H2C_UPGRADES)
async def test_h2c_upgrade_to_protected_path_without_session_is_denied(
    gw: Gw, headers: tuple[str, ...]
) -> None:
    """Upgrade: h2c on a protected path without a session gets the login redirect, never 101."""
    responses, _, writer = await open_exchange(
        head("GET /dashboard HTTP/1.1", HOST, *headers), gw.port, 1
    )
    writer.close()
    assert responses[0].status == 302, responses[0].raw_head
    assert gw.seen.seen == []


async def test_h2c_prior_knowledge_preface_is_refused(gw: Gw) -> None:
    """The HTTP/2 connection preface, sent cold, is refused; nothing reaches the frontend."""
    responses = await converse(gw.port, H2_PREFACE + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00")
    assert [r.status for r in responses] in ([], [400]), [r.raw_head for r in responses]
    assert gw.seen.seen == []
    await assert_served_normally(gw)


async def test_h2c_upgrade_with_session_reaches_frontend_as_http11(gw: Gw) -> None:
    """With a session, an h2c upgrade on a protected page is relayed as plain HTTP/1.1."""
    request = head(
        "GET /dashboard HTTP/1.1",
        HOST,
        SESSION,
        "Connection: Upgrade, HTTP2-Settings",
        "Upgrade: h2c",
        H2_SETTINGS,
    )
    responses, _, writer = await open_exchange(request, gw.port, 1)
    writer.close()
    assert responses[0].status == 200
    body = json.loads(responses[0].body)
    assert body["marker"] == PROTECTED_MARKER
    names = {name.lower() for name, _ in body["headers"]}
    assert not names & {"upgrade", "http2-settings"}, body["headers"]


def websocket_upgrade(
    target: str,
    *extra: str,
    upgrade: str = "Upgrade: websocket",
    connection: str = "Connection: Upgrade",
) -> bytes:
    return head(f"GET {target} HTTP/1.1", HOST, upgrade, connection, WS_KEY, WS_VERSION, *extra)


WEBSOCKET_WITHOUT_SESSION = [
    pytest.param(websocket_upgrade("/dashboard/ws"), id="plain"),
    pytest.param(websocket_upgrade("/DASHBOARD/ws"), id="upper-case"),
    pytest.param(websocket_upgrade("/public/../dashboard/ws"), id="dotdot"),
    pytest.param(websocket_upgrade("/%64ashboard/ws"), id="encoded-letter"),
    pytest.param(websocket_upgrade("//dashboard/ws"), id="double-slash"),
    pytest.param(websocket_upgrade("/dashboard/ws;x"), id="semicolon"),
    pytest.param(websocket_upgrade("http://evil.com/dashboard/ws"), id="absolute-form"),
    pytest.param(websocket_upgrade("/dashboard/ws", upgrade="Upgrade: WebSocket"), id="mixed-case"),
    pytest.param(
        websocket_upgrade("/dashboard/ws", connection="Connection: keep-alive, Upgrade"),
        id="connection-list",
    ),
    pytest.param(websocket_upgrade("/dashboard/ws", "Cookie: session=bogus"), id="bad-cookie"),
    pytest.param(websocket_upgrade("/dashboard/ws", "Cookie: session="), id="empty-cookie"),
    pytest.param(websocket_upgrade("/dashboard/ws", "Origin: https://evil.com"), id="origin"),
    pytest.param(websocket_upgrade("/dashboard/ws", "Accept: application/json"), id="json"),
    pytest.param(
        websocket_upgrade("/dashboard/ws", "X-Auth-User-Id: u-42", "X-Auth-User-Email: a@b.c"),
        id="forged-identity",
    ),
]


@pytest.mark.parametrize("data", WEBSOCKET_WITHOUT_SESSION)
async def test_websocket_upgrade_without_session_is_denied(gw: Gw, data: bytes) -> None:
    """A WebSocket handshake to a protected path without a session: 302/401, never 101."""
    responses, _, writer = await open_exchange(data, gw.port, 1)
    writer.close()
    assert responses[0].status in (302, 401), responses[0].raw_head
    assert responses[0].header("Upgrade") is None
    assert responses[0].header("Sec-WebSocket-Accept") is None
    assert gw.seen.seen == []
    await assert_served_normally(gw)


async def test_websocket_upgrade_with_session_switches_protocols(gw: Gw) -> None:
    """The positive control: with a valid session the same handshake gets 101 from the frontend."""
    responses, _, writer = await open_exchange(
        websocket_upgrade("/dashboard/ws", SESSION), gw.port, 1
    )
    writer.close()
    assert responses[0].status == 101, responses[0].raw_head
    assert [e["raw_path"] for e in gw.seen.seen] == ["/dashboard/ws"]


def header_line(length: int, name: str = "X-Big") -> str:
    """A header line of exactly `length` bytes (without its CRLF)."""
    return f"{name}: " + "v" * (length - len(name) - 2)


def long_named_line(length: int) -> str:
    """A header line of exactly `length` bytes that is nearly all name."""
    return "X-" + "n" * (length - 5) + ": v"


def get_root(*lines: str) -> bytes:
    return head("GET / HTTP/1.1", HOST, *lines)


# max_header_bytes is 8192 in the test config: one line (name, ': ', value) may be that long,
# all of them together 4x that.
OVERSIZED = [
    pytest.param(get_root(header_line(8193)), 431, id="line-8193"),
    pytest.param(get_root(header_line(8197)), 431, id="line-8197"),
    pytest.param(get_root(header_line(8193), "X-After: 1"), 431, id="line-8193-not-last"),
    pytest.param(get_root("X-Short: 1", header_line(8193)), 431, id="line-8193-after-another"),
    pytest.param(get_root(header_line(20_000)), 431, id="line-20000"),
    pytest.param(
        get_root("X-Short: 1", "X-" + "n" * 4000 + ": " + "v" * 8000), 431, id="line-12000-split"
    ),
    pytest.param(get_root(long_named_line(9000)), 431, id="name-over-limit"),
    pytest.param(get_root("Cookie: session=" + "c" * 9000), 431, id="cookie-over-limit"),
    pytest.param(
        head("GET /dashboard HTTP/1.1", HOST, header_line(9000)), 431, id="protected-path"
    ),
    pytest.param(
        get_root(*(header_line(7000, f"X-Big-{n}") for n in range(5))), 431, id="total-35000"
    ),
    pytest.param(
        get_root(*(header_line(4000, f"X-Big-{n}") for n in range(12))), 431, id="total-48000"
    ),
    pytest.param(get_root(*(f"X-H-{n}: {n}" for n in range(200))), 431, id="count-200"),
    pytest.param(get_root(*(f"X-H-{n}: {n}" for n in range(1000))), 431, id="count-1000"),
    pytest.param(head("GET /" + "a" * 20_000 + " HTTP/1.1", HOST), 414, id="request-line-20000"),
    pytest.param(
        head("GET /?" + "q" * 20_000 + " HTTP/1.1", HOST), 414, id="request-line-long-query"
    ),
]


@pytest.mark.parametrize(("data", "status"), OVERSIZED)
async def test_oversized_head_is_refused(gw: Gw, data: bytes, status: int) -> None:
    """Too large a header line or head gets 431 (414 for the request line), quoting nothing."""
    response = await rawhttp.exchange_or_close(gw.port, data)
    if response is not None:
        # The contract names 431 for headers; a request line may get 414 or 400, and too many
        # headers 431 or 400.
        accepted = {status, 400} if status == 414 or b"X-H-1:" in data else {status}
        assert response.status in accepted, response.raw_head
        for filler in (b"vvvvvvvvvv", b"cccccccccc", b"nnnnnnnnnn"):
            assert filler not in response.body
    assert gw.seen.seen == []
    await assert_served_normally(gw)


WITHIN_LIMITS = [
    pytest.param(get_root(header_line(8192)), id="line-exactly-8192"),
    pytest.param(get_root("X-Short: 1", header_line(8192)), id="line-8192-after-another"),
    pytest.param(get_root(header_line(8000)), id="line-8000"),
    pytest.param(get_root("X-Short: 1", long_named_line(8000)), id="long-name-8000"),
    pytest.param(get_root(*(header_line(7000, f"X-Big-{n}") for n in range(4))), id="total-28000"),
    pytest.param(get_root(*(f"X-H-{n}: {n}" for n in range(100))), id="count-100"),
    pytest.param(head("GET /" + "a" * 8000 + " HTTP/1.1", HOST), id="request-line-8000"),
]


@pytest.mark.parametrize("data", WITHIN_LIMITS)
async def test_head_within_limits_is_served(gw: Gw, data: bytes) -> None:
    """A head within the limits is relayed normally."""
    responses, _, writer = await open_exchange(data, gw.port, 1)
    writer.close()
    assert responses[0].status == 200, responses[0].raw_head
    assert len(gw.seen.seen) == 1


async def test_expect_continue_on_protected_path_without_session_sends_no_continue(
    gw: Gw,
) -> None:
    """Expect: 100-continue on a protected path without a session: the 302, no 100 first."""
    request = head(
        "POST /dashboard/upload HTTP/1.1", HOST, "Content-Length: 5", "Expect: 100-continue"
    )
    responses, _, writer = await open_exchange(request, gw.port, 1)
    writer.close()
    assert responses[0].status == 302, responses[0].raw_head
    assert gw.seen.seen == []


# Long header names, within the line limit, on a protected path: the gateway answers itself (the
# login redirect), so only the gateway's own reading of the head is tested, not the frontend's.
LONG_NAMES_WITHIN_LIMIT = [
    pytest.param(("Accept: text/html", long_named_line(8192)), id="line-8192-second"),
    pytest.param(("Accept: text/html", long_named_line(8150)), id="line-8150-second"),
    pytest.param((long_named_line(8192), "Accept: text/html"), id="line-8192-then-another"),
    pytest.param(
        ("Accept: text/html", long_named_line(4100), long_named_line(4100)), id="two-4100"
    ),
]


@pytest.mark.parametrize("lines", LONG_NAMES_WITHIN_LIMIT)
async def test_long_header_name_within_limit_is_read(gw: Gw, lines: tuple[str, ...]) -> None:
    """A header line of at most 8192 bytes is read, however it splits into name and value."""
    responses, _, writer = await open_exchange(
        head("GET /dashboard HTTP/1.1", HOST, *lines), gw.port, 1
    )
    writer.close()
    assert responses[0].status == 302, responses[0].raw_head
    assert gw.seen.seen == []
