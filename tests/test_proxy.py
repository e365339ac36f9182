"""The relay: what reaches the frontend, what comes back, and how failures of the frontend look.

Requests that must arrive exactly as written go over raw sockets (tests.rawhttp); bulk transfers
use aiohttp and stream on both ends, so no test holds a whole large body in memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import hashlib
import json
import re
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest

from tests.support import rawhttp
from tests.support.backends import RawUpstream
from tests.support.harness import GOOD, GatewayFactory, Gw, eventually

MiB = 1024 * 1024
BIG = 64 * MiB
BLOCK = 64 * 1024
# The frontend's /download body: this block repeated, the last piece cut to size.
DOWNLOAD_BLOCK = bytes(range(256)) * 256
GENERATED_ID = re.compile(r"^[0-9a-f]{32}$")
HOP_BY_HOP = (
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
)

RawUpstreamFixture = tuple[RawUpstream, int]


# ---------------------------------------------------------------------------------------------
# Helpers


@contextlib.asynccontextmanager
async def connection(
    port: int,
) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    """One raw client connection to the gateway, closed on exit."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        yield reader, writer
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def send(writer: asyncio.StreamWriter, data: bytes) -> None:
    writer.write(data)
    await writer.drain()


async def read_to_end(reader: asyncio.StreamReader) -> bytes:
    """Everything until the connection ends, by a clean close or by a reset."""
    data = bytearray()
    with contextlib.suppress(ConnectionError):
        while chunk := await reader.read(65536):
            data += chunk
    return bytes(data)


def request(
    target: str,
    *headers: str,
    method: str = "GET",
    body: bytes | None = None,
) -> bytes:
    """A raw request; a body gets its Content-Length."""
    extra = list(headers)
    if body is not None:
        extra.append(f"Content-Length: {len(body)}")
    return rawhttp.get(target, *extra, method=method) + (body or b"")


def echoed(response: rawhttp.RawResponse) -> dict[str, Any]:
    """The frontend's JSON echo of the request it received."""
    assert response.status == 200, response.raw_head
    data: dict[str, Any] = json.loads(response.body)
    return data


def echoed_headers(echo: dict[str, Any], name: str) -> list[str]:
    return [v for k, v in echo["headers"] if k.lower() == name.lower()]


def closed_port() -> int:
    """A loopback port nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def download_digest(size: int) -> str:
    digest = hashlib.sha256()
    sent = 0
    while sent < size:
        piece = DOWNLOAD_BLOCK[: min(len(DOWNLOAD_BLOCK), size - sent)]
        digest.update(piece)
        sent += len(piece)
    return digest.hexdigest()


# ---------------------------------------------------------------------------------------------
# What reaches the frontend


@dataclass(frozen=True)
class Forwarded:
    method: str
    target: str
    expected_raw_path: str
    body: bytes | None = None
    headers: tuple[str, ...] = ()
    chunked: bool = False


FORWARDED = {
    "get-plain": Forwarded("GET", "/plain", "/plain"),
    "get-root": Forwarded("GET", "/", "/"),
    "query-byte-for-byte": Forwarded("GET", "/q?a=1&b=%2F&c=%zz&d", "/q?a=1&b=%2F&c=%zz&d"),
    "query-odd-bytes": Forwarded(
        "GET",
        "/q?x=a+b&y=%20&z==&&w=%E2%82%AC&v=[1]&u=|",
        "/q?x=a+b&y=%20&z==&&w=%E2%82%AC&v=[1]&u=|",
    ),
    "query-with-slashes-and-dots": Forwarded(
        "GET", "/q?next=/a/../b//c&p=./x", "/q?next=/a/../b//c&p=./x"
    ),
    "query-only-key": Forwarded("GET", "/q?flag", "/q?flag"),
    "query-empty-kept": Forwarded("GET", "/q?", "/q?"),
    "query-starting-with-question-mark": Forwarded("GET", "/q??a", "/q??a"),
    "query-lone-percent": Forwarded("GET", "/q?a=%", "/q?a=%"),
    "normal-path-escapes-kept": Forwarded(
        "GET", "/caf%C3%A9/a%20b/x%3Fy?k=v", "/caf%C3%A9/a%20b/x%3Fy?k=v"
    ),
    "normal-path-lowercase-escapes-kept": Forwarded("GET", "/caf%c3%a9", "/caf%c3%a9"),
    "normal-path-case-kept": Forwarded("GET", "/Mixed/CASE/File.JS", "/Mixed/CASE/File.JS"),
    "normal-path-sub-delims-kept": Forwarded("GET", "/a:b@c!$&'()*+,=", "/a:b@c!$&'()*+,="),
    "normal-path-trailing-slash-kept": Forwarded("GET", "/dir/", "/dir/"),
    "dot-segments-normalized": Forwarded("GET", "/a/./b/../c?x=1", "/a/c?x=1"),
    "double-slashes-normalized": Forwarded("GET", "//a///b", "/a/b"),
    "unreserved-escapes-decoded": Forwarded("GET", "/%61%62c", "/abc"),
    "params-dropped": Forwarded("GET", "/a;jsessionid=1/b", "/a/b"),
    "absolute-form-target": Forwarded("GET", "http://other.test/abs?q=1", "/abs?q=1"),
    "post-body": Forwarded("POST", "/submit", "/submit", b'{"a": 1}'),
    "put-body": Forwarded("PUT", "/item/7", "/item/7", b"\x00\x01\x02binary\xff"),
    "patch-body": Forwarded("PATCH", "/item/7?v=2", "/item/7?v=2", b"patch"),
    "delete-no-body": Forwarded("DELETE", "/item/7", "/item/7"),
    "delete-with-body": Forwarded("DELETE", "/item/7", "/item/7", b"why"),
    "options": Forwarded("OPTIONS", "/item", "/item"),
    "custom-method": Forwarded("PURGE", "/cache/x", "/cache/x"),
    "post-empty-body": Forwarded("POST", "/submit", "/submit", b""),
    "post-protected-with-session": Forwarded(
        "POST",
        "/dashboard/save?x=%2F",
        "/dashboard/save?x=%2F",
        b"saved",
        (f"Cookie: session={GOOD}",),
    ),
    "post-chunked-body": Forwarded("POST", "/chunked", "/chunked", b"hello world", chunked=True),
}


@pytest.mark.parametrize("case", FORWARDED.values(), ids=FORWARDED.keys())
async def test_request_reaches_frontend(gw: Gw, case: Forwarded) -> None:
    """Method, normalized path (normal paths byte for byte), raw query and body are forwarded."""
    body = case.body or b""
    if case.chunked:
        head = request(case.target, *case.headers, "Transfer-Encoding: chunked", method=case.method)
        data = head + b"5\r\n" + body[:5] + b"\r\n6\r\n" + body[5:] + b"\r\n0\r\n\r\n"
    else:
        data = request(case.target, *case.headers, method=case.method, body=case.body)
    echo = echoed(await rawhttp.exchange(gw.port, data))
    assert echo["method"] == case.method
    assert echo["raw_path"] == case.expected_raw_path
    assert echo["body_length"] == len(body)
    assert echo["body_sha256"] == hashlib.sha256(body).hexdigest()
    assert len(gw.seen.seen) == 1


REQUEST_HOP_BY_HOP = (
    "Connection: keep-alive, X-Drop-Me",
    "X-Drop-Me: named in Connection",
    "Keep-Alive: timeout=300",
    "Proxy-Connection: keep-alive",
    "Proxy-Authorization: Basic dXNlcjpwYXNz",
    "TE: trailers",
    "Trailer: X-Checksum",
    "X-Kept: yes",
)


async def test_hop_by_hop_request_headers_dropped(gw: Gw) -> None:
    """Hop-by-hop request headers, and those Connection names, never reach the frontend."""
    echo = echoed(await rawhttp.exchange(gw.port, request("/hop", *REQUEST_HOP_BY_HOP)))
    seen = {k.lower() for k, _ in echo["headers"]}
    for name in ("x-drop-me", "keep-alive", "proxy-connection"):
        assert name not in seen
    for name in ("proxy-authorization", "te", "trailer"):
        assert name not in seen
    assert echoed_headers(echo, "Connection") in ([], ["keep-alive"], ["close"])
    assert echoed_headers(echo, "X-Kept") == ["yes"]


# ---------------------------------------------------------------------------------------------
# Streaming both ways


async def generated_body(size: int, digest: Any) -> AsyncIterator[bytes]:
    """`size` bytes in BLOCK-sized chunks, each distinct, hashed as they are produced."""
    base = bytes(range(256)) * (BLOCK // 256)
    for index in range(size // BLOCK):
        chunk = index.to_bytes(8, "big") + base[8:]
        digest.update(chunk)
        yield chunk


@pytest.mark.parametrize("framing", ["chunked", "content-length"])
async def test_large_upload_streams(gw: Gw, client: aiohttp.ClientSession, framing: str) -> None:
    """A 64 MiB upload, generated chunk by chunk, reaches the frontend whole and in order."""
    digest = hashlib.sha256()
    headers = {"Content-Length": str(BIG)} if framing == "content-length" else {}
    async with (
        asyncio.timeout(60),
        client.post(
            gw.url + "/upload", data=generated_body(BIG, digest), headers=headers
        ) as response,
    ):
        assert response.status == 200
        echo = await response.json()
    assert echo["body_length"] == BIG
    assert echo["body_sha256"] == digest.hexdigest()


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
async def test_large_download_streams(gw: Gw, client: aiohttp.ClientSession, chunked: bool) -> None:
    """A 64 MiB download arrives whole, read and hashed piece by piece."""
    target = f"/download?size={BIG}" + ("&chunked=1" if chunked else "")
    digest = hashlib.sha256()
    size = 0
    async with asyncio.timeout(60), client.get(gw.url + target) as response:
        assert response.status == 200
        if chunked:
            assert response.headers.get("Transfer-Encoding") == "chunked"
        else:
            assert response.headers["Content-Length"] == str(BIG)
        async for chunk in response.content.iter_chunked(BLOCK):
            digest.update(chunk)
            size += len(chunk)
    assert size == BIG
    assert digest.hexdigest() == download_digest(BIG)


@pytest.mark.parametrize("framing", ["chunked", "content-length"])
async def test_upload_forwarded_before_body_complete(
    gateway_factory: GatewayFactory, raw_upstream: RawUpstreamFixture, framing: str
) -> None:
    """The request reaches the frontend while the client is still sending its body."""
    upstream, port = raw_upstream
    gw = await gateway_factory(upstream=f"http://127.0.0.1:{port}")
    if framing == "chunked":
        head = request("/stream-up", "Transfer-Encoding: chunked", method="POST")
        first, rest = b"4\r\nfirs\r\n", b"4\r\nlast\r\n0\r\n\r\n"
    else:
        head = request("/stream-up", "Content-Length: 8", method="POST")
        first, rest = b"firs", b"last"
    async with asyncio.timeout(10), connection(gw.port) as (_reader, writer):
        await send(writer, head + first)
        await eventually(lambda: len(upstream.received) == 1)
        with contextlib.suppress(ConnectionError):
            await send(writer, rest)
    assert upstream.received[0].startswith(b"POST /stream-up HTTP/1.1\r\n")


async def test_chunked_response_stays_chunked(gw: Gw) -> None:
    """A chunked response reaches a raw client chunked, with the frontend's bytes."""
    response = await rawhttp.exchange(gw.port, request("/download?size=200000&chunked=1"))
    assert response.status == 200
    assert response.header("Transfer-Encoding") == "chunked"
    assert response.header("Content-Length") is None
    assert hashlib.sha256(response.body).hexdigest() == download_digest(200000)


async def test_server_sent_events_arrive_as_sent(gw: Gw, client: aiohttp.ClientSession) -> None:
    """The first server-sent event reaches the client long before the stream ends."""
    started = time.monotonic()
    async with client.get(gw.url + "/events?count=5&gap=0.5") as response:
        assert response.status == 200
        assert response.headers["Content-Type"] == "text/event-stream"
        async with asyncio.timeout(1.5):
            first = await response.content.readuntil(b"\n\n")
        assert first == b"data: tick 0\n\n"
        assert time.monotonic() - started < 1.5
        async with asyncio.timeout(2.0):
            second = await response.content.readuntil(b"\n\n")
        assert second == b"data: tick 1\n\n"
        async with asyncio.timeout(10):
            rest = await response.content.read()
    assert rest == b"".join(f"data: tick {n}\n\n".encode() for n in range(2, 5))


# ---------------------------------------------------------------------------------------------
# What comes back from the real frontend


async def test_several_set_cookie_and_repeated_headers_pass(gw: Gw) -> None:
    """Several Set-Cookie stay several and in order; a repeated header keeps both values."""
    response = await rawhttp.exchange(gw.port, request("/cookies"))
    assert response.status == 200
    assert response.all("Set-Cookie") == ["a=1; Path=/", "b=2; Path=/; HttpOnly"]
    assert response.all("X-Custom") == ["one", "two"]
    assert response.body == b"cookies"


async def test_gzip_body_is_not_decompressed(gw: Gw) -> None:
    """A gzip body passes byte for byte with Content-Encoding: gzip kept."""
    response = await rawhttp.exchange(
        gw.port, request("/gzip", "Accept-Encoding: gzip, deflate, br")
    )
    assert response.status == 200
    assert response.header("Content-Encoding") == "gzip"
    assert response.body[:2] == b"\x1f\x8b"
    assert response.header("Content-Length") == str(len(response.body))
    assert gzip.decompress(response.body) == b"hello gzip " * 100
    # gzip.compress is deterministic but for the timestamp: byte-compare with it at that time.
    mtime = int.from_bytes(response.body[4:8], "little")
    assert response.body == gzip.compress(b"hello gzip " * 100, mtime=mtime)


async def test_redirect_not_followed(gw: Gw) -> None:
    """A redirect from the frontend is passed to the client, not followed."""
    response = await rawhttp.exchange(gw.port, request("/redirect"))
    assert response.status == 302
    assert response.header("Location") == "/elsewhere"
    assert [e["raw_path"] for e in gw.seen.seen] == ["/redirect"]


@pytest.mark.parametrize(
    ("target", "content_length"),
    [("/cookies", "7"), ("/echo/head", None)],
    ids=["cookies", "echo"],
)
async def test_head_gets_headers_without_body(
    gw: Gw, target: str, content_length: str | None
) -> None:
    """HEAD gets the frontend's headers and no body; the connection stays usable."""
    async with asyncio.timeout(10), connection(gw.port) as (reader, writer):
        await send(writer, request(target, method="HEAD"))
        head = await rawhttp.read_response(reader, "HEAD")
        assert head.status == 200
        length = head.header("Content-Length")
        assert length is not None and int(length) > 0
        if content_length is not None:
            assert length == content_length
        assert head.body == b""
        if target == "/cookies":
            assert head.all("Set-Cookie") == ["a=1; Path=/", "b=2; Path=/; HttpOnly"]
        # Any body bytes would be read as the start of the next response.
        await send(writer, request("/after-head"))
        after = await rawhttp.read_response(reader)
        assert echoed(after)["raw_path"] == "/after-head"
    assert [e["method"] for e in gw.seen.seen] == ["HEAD", "GET"]


# ---------------------------------------------------------------------------------------------
# What comes back from an upstream that sends exact bytes


@dataclass(frozen=True)
class Passthrough:
    upstream: bytes
    status: int
    reason: str
    body: bytes
    present: tuple[tuple[str, list[str]], ...] = ()
    absent: tuple[str, ...] = ()
    method: str = "GET"


NO_INVENTED = ("content-type", "server")
PASSTHROUGH = {
    "no-invented-headers": Passthrough(
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
        200,
        "OK",
        b"hello",
        (("Content-Length", ["5"]),),
        NO_INVENTED,
    ),
    "teapot-reason": Passthrough(
        b"HTTP/1.1 418 I'm a teapot\r\nContent-Length: 6\r\n\r\nteapot",
        418,
        "I'm a teapot",
        b"teapot",
        absent=NO_INVENTED,
    ),
    "custom-reason": Passthrough(
        b"HTTP/1.1 200 Fine Thanks\r\nContent-Length: 2\r\n\r\nok", 200, "Fine Thanks", b"ok"
    ),
    "unregistered-status": Passthrough(
        b"HTTP/1.1 299 Odd Status\r\nContent-Length: 2\r\n\r\nok", 299, "Odd Status", b"ok"
    ),
    "server-error-passes": Passthrough(
        b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 7\r\nContent-Length: 4\r\n\r\ndown",
        503,
        "Service Unavailable",
        b"down",
        (("Retry-After", ["7"]),),
    ),
    "frontend-server-header-kept": Passthrough(
        b"HTTP/1.1 200 OK\r\nServer: frontend/1.0\r\nContent-Type: text/x-odd\r\n"
        b"Content-Length: 2\r\n\r\nok",
        200,
        "OK",
        b"ok",
        (("Server", ["frontend/1.0"]), ("Content-Type", ["text/x-odd"])),
    ),
    "headers-in-order": Passthrough(
        b"HTTP/1.1 200 OK\r\nSet-Cookie: z=1\r\nSet-Cookie: a=2; Secure\r\nSet-Cookie: m=3\r\n"
        b"Link: </a>; rel=preload\r\nLink: </b>; rel=preload\r\nContent-Length: 2\r\n\r\nok",
        200,
        "OK",
        b"ok",
        (
            ("Set-Cookie", ["z=1", "a=2; Secure", "m=3"]),
            ("Link", ["</a>; rel=preload", "</b>; rel=preload"]),
        ),
    ),
    "hop-by-hop-dropped": Passthrough(
        b"HTTP/1.1 200 OK\r\nConnection: keep-alive, X-Hop\r\nKeep-Alive: timeout=5\r\n"
        b"X-Hop: named in Connection\r\nProxy-Authenticate: Basic\r\nTrailer: X-Sum\r\n"
        b"Upgrade: h2c\r\nProxy-Connection: keep-alive\r\nX-Kept: yes\r\n"
        b"Content-Length: 2\r\n\r\nok",
        200,
        "OK",
        b"ok",
        (("X-Kept", ["yes"]),),
        ("keep-alive", "x-hop", "proxy-authenticate", "trailer", "upgrade", "proxy-connection"),
    ),
    "chunked-body": Passthrough(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n1\r\n \r\n5\r\nworld\r\n0\r\n\r\n",
        200,
        "OK",
        b"hello world",
        absent=NO_INVENTED,
    ),
    "close-delimited-body": Passthrough(
        b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end",
        200,
        "OK",
        b"until the end",
        absent=NO_INVENTED,
    ),
    "no-content": Passthrough(
        b"HTTP/1.1 204 No Content\r\nX-Done: 1\r\n\r\n",
        204,
        "No Content",
        b"",
        (("X-Done", ["1"]),),
    ),
    "not-modified": Passthrough(
        b'HTTP/1.1 304 Not Modified\r\nETag: "v1"\r\nCache-Control: max-age=60\r\n\r\n',
        304,
        "Not Modified",
        b"",
        (("ETag", ['"v1"']), ("Cache-Control", ["max-age=60"])),
    ),
    "head": Passthrough(
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-Head: 1\r\n\r\n",
        200,
        "OK",
        b"",
        (("X-Head", ["1"]),),
        ("content-type",),
        method="HEAD",
    ),
    "redirect": Passthrough(
        b"HTTP/1.1 302 Found\r\nLocation: /elsewhere\r\nContent-Length: 0\r\n\r\n",
        302,
        "Found",
        b"",
        (("Location", ["/elsewhere"]),),
    ),
}


@pytest.mark.parametrize("case", PASSTHROUGH.values(), ids=PASSTHROUGH.keys())
async def test_response_passes_as_sent(
    gateway_factory: GatewayFactory, raw_upstream: RawUpstreamFixture, case: Passthrough
) -> None:
    """Status, reason, headers and body come back as the frontend sent them, nothing invented."""
    upstream, port = raw_upstream
    upstream.response = case.upstream
    gw = await gateway_factory(upstream=f"http://127.0.0.1:{port}")
    async with asyncio.timeout(10), connection(gw.port) as (reader, writer):
        for _ in range(2):
            await send(writer, request("/raw", method=case.method))
            response = await rawhttp.read_response(reader, case.method)
            assert (response.status, response.reason) == (case.status, case.reason)
            assert response.body == case.body
            for name, values in case.present:
                assert response.all(name) == values, name
            for name in (*case.absent, *HOP_BY_HOP):
                if name == "transfer-encoding" and response.header(name) == "chunked":
                    continue  # the gateway's own framing towards the client
                if name == "connection":
                    continue  # the gateway's own keep-alive towards the client
                assert response.header(name) is None, name
            # The connection carries a second exchange: no stray body bytes, not closed.
    assert len(upstream.received) == 2


async def test_upstream_connection_close_keeps_client_connection(
    gateway_factory: GatewayFactory, raw_upstream: RawUpstreamFixture
) -> None:
    """The frontend closing its connection does not close the client's connection."""
    upstream, port = raw_upstream
    upstream.response = b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok"
    gw = await gateway_factory(upstream=f"http://127.0.0.1:{port}")
    async with asyncio.timeout(10), connection(gw.port) as (reader, writer):
        for n in range(3):
            await send(writer, request(f"/n{n}"))
            response = await rawhttp.read_response(reader)
            assert (response.status, response.body) == (200, b"ok")
            assert (response.header("Connection") or "").lower() != "close"
    assert [head.split(b" ")[1] for head in upstream.received] == [b"/n0", b"/n1", b"/n2"]


async def test_keep_alive_two_requests_one_connection(gw: Gw) -> None:
    """Two requests on one client connection both reach the frontend and are answered."""
    async with asyncio.timeout(10), connection(gw.port) as (reader, writer):
        await send(writer, request("/first?n=1"))
        first = echoed(await rawhttp.read_response(reader))
        await send(writer, request("/second", method="POST", body=b"payload"))
        second = echoed(await rawhttp.read_response(reader))
    assert first["raw_path"] == "/first?n=1"
    assert (second["raw_path"], second["body_length"]) == ("/second", 7)


async def test_keep_alive_pipelined_requests(gw: Gw) -> None:
    """Two requests written at once on one connection are answered in order."""
    async with asyncio.timeout(10), connection(gw.port) as (reader, writer):
        await send(writer, request("/p1") + request("/p2", method="PUT", body=b"xy"))
        first = echoed(await rawhttp.read_response(reader))
        second = echoed(await rawhttp.read_response(reader))
    assert (first["raw_path"], second["raw_path"]) == ("/p1", "/p2")
    assert second["body_length"] == 2


# ---------------------------------------------------------------------------------------------
# Failures of the frontend


async def test_unreachable_frontend_is_502(gateway_factory: GatewayFactory) -> None:
    """A frontend that refuses connections gives 502."""
    gw = await gateway_factory(upstream=f"http://127.0.0.1:{closed_port()}")
    response = await rawhttp.exchange(gw.port, request("/x", "Accept: application/json"))
    assert response.status == 502
    assert response.header("X-Request-ID")
    assert json.loads(response.body)["status"] == 502


async def test_slow_frontend_is_504(gateway_factory: GatewayFactory) -> None:
    """No response headers within upstream_timeout gives 504, carrying the request id."""
    gw = await gateway_factory(upstream_timeout=0.5)
    started = time.monotonic()
    # The frontend would answer 200 after 2 s; a 504 means the gateway gave up first.
    response = await rawhttp.exchange(gw.port, request("/slow?delay=2", "X-Request-ID: slow-1"))
    elapsed = time.monotonic() - started
    assert response.status == 504
    assert response.header("X-Request-ID") == "slow-1"
    assert elapsed >= 0.45


async def test_slow_but_in_time_passes(gateway_factory: GatewayFactory) -> None:
    """A frontend answering within upstream_timeout is relayed normally."""
    gw = await gateway_factory(upstream_timeout=2.0)
    response = await rawhttp.exchange(gw.port, request("/slow?delay=0.2"))
    assert (response.status, response.body) == (200, b"slow")


async def test_slow_body_after_headers_not_cut_by_timeout(
    gateway_factory: GatewayFactory, client: aiohttp.ClientSession
) -> None:
    """upstream_timeout bounds the wait for headers only: a longer stream is not cut."""
    gw = await gateway_factory(upstream_timeout=0.5)
    async with asyncio.timeout(10), client.get(gw.url + "/events?count=3&gap=0.4") as response:
        body = await response.read()
    assert body == b"".join(f"data: tick {n}\n\n".encode() for n in range(3))


async def test_frontend_cut_mid_body_aborts_client(gw: Gw) -> None:
    """A frontend breaking off mid-body ends the client's connection short of Content-Length."""
    async with asyncio.timeout(10), connection(gw.port) as (reader, writer):
        await send(writer, request("/cut"))
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200")
        assert b"\r\ncontent-length: 100000\r\n" in head.lower()
        body = await read_to_end(reader)
    assert 0 < len(body) < 100_000


async def test_frontend_cut_mid_chunked_body_never_ends_cleanly(
    gateway_factory: GatewayFactory, raw_upstream: RawUpstreamFixture
) -> None:
    """A chunked response that breaks off never gets its final 0-chunk towards the client."""
    upstream, port = raw_upstream
    upstream.response = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n100\r\npartial"
    )
    gw = await gateway_factory(upstream=f"http://127.0.0.1:{port}")
    async with asyncio.timeout(10), connection(gw.port) as (reader, writer):
        await send(writer, request("/chunks"))
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200")
        assert b"transfer-encoding: chunked" in head.lower()
        rest = await read_to_end(reader)
    assert b"hello" in rest
    assert not rest.endswith(b"0\r\n\r\n")
    # Parsed as a whole, the response runs out before its last chunk.
    stream = asyncio.StreamReader()
    stream.feed_data(head + rest)
    stream.feed_eof()
    with pytest.raises(asyncio.IncompleteReadError):
        await rawhttp.read_response(stream)


MALFORMED = {
    "garbage": b"NOT HTTP\r\n\r\n",
    "nothing-then-close": b"",
    "bad-status-code": b"HTTP/1.1 abc OK\r\nContent-Length: 0\r\n\r\n",
    "header-without-colon": b"HTTP/1.1 200 OK\r\nBad Header Line\r\nContent-Length: 0\r\n\r\n",
    "head-cut-short": b"HTTP/1.1 200 OK\r\nContent-Le",
}


@pytest.mark.parametrize("garbage", MALFORMED.values(), ids=MALFORMED.keys())
async def test_malformed_upstream_response_is_502(
    gateway_factory: GatewayFactory, raw_upstream: RawUpstreamFixture, garbage: bytes
) -> None:
    """A malformed frontend response gives 502, and the gateway keeps serving afterwards."""
    upstream, port = raw_upstream
    upstream.response = garbage
    gw = await gateway_factory(upstream=f"http://127.0.0.1:{port}")
    response = await rawhttp.exchange(gw.port, request("/broken", "X-Request-ID: broken-1"))
    assert response.status == 502
    assert response.header("X-Request-ID") == "broken-1"
    upstream.response = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfixed"
    after = await rawhttp.exchange(gw.port, request("/fixed"))
    assert (after.status, after.body) == (200, b"fixed")


# ---------------------------------------------------------------------------------------------
# Expect: 100-continue


CONTINUE_LINE = b"HTTP/1.1 100 Continue\r\n\r\n"


@pytest.mark.parametrize(
    ("target", "cookie"),
    [("/upload", None), ("/dashboard/upload", GOOD)],
    ids=["public", "protected-with-session"],
)
async def test_expect_continue_allowed(gw: Gw, target: str, cookie: str | None) -> None:
    """An allowed request with Expect: 100-continue gets 100 Continue, then the final answer."""
    body = b"the body, sent after 100"
    headers = ["Expect: 100-continue", f"Content-Length: {len(body)}"]
    if cookie is not None:
        headers.append(f"Cookie: session={cookie}")
    async with asyncio.timeout(10), connection(gw.port) as (reader, writer):
        await send(writer, rawhttp.get(target, *headers, method="POST"))
        interim = await reader.readuntil(b"\r\n\r\n")
        assert interim == CONTINUE_LINE
        await send(writer, body)
        final = await rawhttp.read_response(reader)
    echo = echoed(final)
    assert (echo["raw_path"], echo["body_length"]) == (target, len(body))
    assert echo["body_sha256"] == hashlib.sha256(body).hexdigest()


@pytest.mark.parametrize(
    ("accept", "status"),
    [("text/html", 302), ("application/json", 401)],
    ids=["browser-302", "script-401"],
)
async def test_expect_continue_denied_without_100(gw: Gw, accept: str, status: int) -> None:
    """A protected request without session gets its 302/401 without 100; the body is never read."""
    headers = ["Expect: 100-continue", "Content-Length: 1000", f"Accept: {accept}"]
    async with asyncio.timeout(10), connection(gw.port) as (reader, writer):
        await send(writer, rawhttp.get("/dashboard/upload", *headers, method="POST"))
        final = await rawhttp.read_response(reader)
    assert final.status == status
    assert not final.raw_head.startswith(b"HTTP/1.1 100")
    assert gw.seen.seen == []


# ---------------------------------------------------------------------------------------------
# X-Request-ID


SANE_IDS = {
    "word": "abc-123",
    "uuid": "0b9c1c2e-8f5a-4c1e-9d61-0a4f3f9e7e11",
    "dots-colons": "req.1:2_3",
    "max-length": "r" * 128,
}
BAD_IDS = {
    "spaces": "has spaces in it",
    "too-long-300": "a" * 300,
    "just-over-max": "b" * 129,
    "semicolon": "id;drop",
    "quote": 'id"x',
    "angle-brackets": "<script>",
    "empty": "",
}


@pytest.mark.parametrize("request_id", SANE_IDS.values(), ids=SANE_IDS.keys())
async def test_sane_request_id_passed_to_frontend(gw: Gw, request_id: str) -> None:
    """A sane incoming X-Request-ID reaches the frontend unchanged, once."""
    echo = echoed(await rawhttp.exchange(gw.port, request("/rid", f"X-Request-ID: {request_id}")))
    assert echoed_headers(echo, "X-Request-ID") == [request_id]


@pytest.mark.parametrize("request_id", SANE_IDS.values(), ids=SANE_IDS.keys())
async def test_sane_request_id_in_gateway_error(
    gateway_factory: GatewayFactory, request_id: str
) -> None:
    """A sane incoming X-Request-ID is returned in the gateway's own error answer."""
    gw = await gateway_factory(upstream=f"http://127.0.0.1:{closed_port()}")
    response = await rawhttp.exchange(
        gw.port, request("/rid", f"X-Request-ID: {request_id}", "Accept: application/json")
    )
    assert response.status == 502
    assert response.all("X-Request-ID") == [request_id]
    assert json.loads(response.body)["request_id"] == request_id


@pytest.mark.parametrize("request_id", BAD_IDS.values(), ids=BAD_IDS.keys())
async def test_bad_request_id_replaced(gw: Gw, request_id: str) -> None:
    """A bad X-Request-ID is replaced by a generated one before it reaches the frontend."""
    echo = echoed(await rawhttp.exchange(gw.port, request("/rid", f"X-Request-ID: {request_id}")))
    sent = echoed_headers(echo, "X-Request-ID")
    assert len(sent) == 1
    assert sent[0] != request_id
    assert GENERATED_ID.match(sent[0])


@pytest.mark.parametrize("request_id", BAD_IDS.values(), ids=BAD_IDS.keys())
async def test_bad_request_id_replaced_in_gateway_error(
    gateway_factory: GatewayFactory, request_id: str
) -> None:
    """A gateway error answer carries a generated id in place of a bad incoming one."""
    gw = await gateway_factory(upstream=f"http://127.0.0.1:{closed_port()}")
    response = await rawhttp.exchange(gw.port, request("/rid", f"X-Request-ID: {request_id}"))
    assert response.status == 502
    returned = response.all("X-Request-ID")
    assert len(returned) == 1
    assert returned[0] != request_id
    assert GENERATED_ID.match(returned[0])


async def test_missing_request_id_generated(gw: Gw) -> None:
    """Without an X-Request-ID, the frontend gets a generated one, different per request."""
    ids = []
    for _ in range(2):
        echo = echoed(await rawhttp.exchange(gw.port, request("/rid")))
        [sent] = echoed_headers(echo, "X-Request-ID")
        assert GENERATED_ID.match(sent)
        ids.append(sent)
    assert ids[0] != ids[1]
