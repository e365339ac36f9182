"""The lean upstream client (gateway.upstream) against scripted frontends on real loopback sockets.

Each frontend here is an `asyncio.start_server` that reads and writes raw bytes: a test decides
exactly what the client is answered and when a connection ends, counts the connections the client
opens, and reads exactly what the client sent. Nothing is mocked.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import aiohttp
import pytest
from aiohttp import streams
from aiohttp.base_protocol import BaseProtocol
from yarl import URL

from gateway.forwarded import Headers
from gateway.upstream import Exchange, MalformedAnswer, UpstreamCut, UpstreamPool, _request_head
from tests.support.harness import eventually

# The outer bound on anything a test waits for: a hang fails the test instead of blocking it.
DEADLINE = 10.0
# The pool's own time limit, where a test is not about it.
TIME_LIMIT = 5.0
# A body well past the StreamReader's high-water mark, so flow control pauses and resumes.
LARGE = bytes(range(256)) * 4096
CHUNK_SIZE_LINE = re.compile(rb"[0-9a-f]+\r\n")


# ---------------------------------------------------------------------------------------------
# Scripted frontends


@dataclass
class Received:
    """One request as the frontend read it off the wire."""

    head: bytes
    # The body as framed on the wire, and with chunked framing taken off.
    wire_body: bytes = b""
    body: bytes = b""

    @property
    def line(self) -> bytes:
        return self.head.split(b"\r\n", 1)[0]

    def headers(self) -> list[tuple[bytes, bytes]]:
        lines = self.head.removesuffix(b"\r\n\r\n").split(b"\r\n")[1:]
        return [(name, value.strip()) for name, _, value in (x.partition(b":") for x in lines)]

    def header(self, name: bytes) -> list[bytes]:
        return [v for n, v in self.headers() if n.lower() == name.lower()]


class Peer:
    """One connection the frontend accepted, driven by the frontend's script."""

    def __init__(self, number: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.number = number
        self.reader = reader
        self.writer = writer
        self.requests: list[Received] = []
        # The chunks of a chunked body, each as soon as it has arrived.
        self.chunks: list[bytes] = []
        # Set once the client has closed (or reset) this connection.
        self.ended = asyncio.Event()

    async def head(self) -> Received | None:
        """The next request's head; None when the client ends the connection instead."""
        try:
            head = await self.reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            self.ended.set()
            return None
        received = Received(head)
        self.requests.append(received)
        return received

    async def request(self) -> Received | None:
        """The next whole request, its body read by Content-Length or by chunked framing."""
        received = await self.head()
        if received is None:
            return None
        if b"chunked" in b",".join(received.header(b"Transfer-Encoding")).lower():
            await self._read_chunked(received)
        elif lengths := received.header(b"Content-Length"):
            received.body = await self.reader.readexactly(int(lengths[0]))
            received.wire_body = received.body
        return received

    async def _read_chunked(self, received: Received) -> None:
        """Strict chunked framing: a lowercase hex size, CRLF, the data, CRLF; no trailers."""
        while True:
            size_line = await self.reader.readuntil(b"\r\n")
            if not CHUNK_SIZE_LINE.fullmatch(size_line):
                raise ValueError(f"bad chunk size line {size_line!r}")
            received.wire_body += size_line
            size = int(size_line[:-2], 16)
            data = await self.reader.readexactly(size + 2)
            received.wire_body += data
            if data[-2:] != b"\r\n":
                raise ValueError(f"chunk not ended by CRLF: {data[-2:]!r}")
            if size == 0:
                return
            received.body += data[:-2]
            self.chunks.append(data[:-2])

    def send(self, data: bytes) -> None:
        self.writer.write(data)

    async def until_ended(self) -> bytes:
        """Read until the client ends the connection; what it sent meanwhile."""
        data = bytearray()
        with contextlib.suppress(ConnectionError):
            while chunk := await self.reader.read(65536):
                data += chunk
        self.ended.set()
        return bytes(data)


Script = Callable[[Peer], Awaitable[None]]


class ScriptServer:
    """A loopback server running `script` on each connection it accepts, closing it after."""

    def __init__(self, script: Script) -> None:
        self._script = script
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.peers: list[Peer] = []
        self.errors: list[Exception] = []
        self.port = 0

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        # Closing its side ends every script waiting to read; one waiting for something else
        # (a test that failed early) is cancelled after the deadline.
        for peer in self.peers:
            peer.writer.close()
        if self._tasks:
            _, stuck = await asyncio.wait(self._tasks, timeout=DEADLINE)
            for task in stuck:
                task.cancel()
            await asyncio.gather(*stuck, return_exceptions=True)

    @property
    def origin(self) -> URL:
        return URL(f"http://127.0.0.1:{self.port}")

    @property
    def accepted(self) -> int:
        """How many connections the client has opened."""
        return len(self.peers)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        peer = Peer(len(self.peers), reader, writer)
        self.peers.append(peer)
        try:
            await self._script(peer)
        except ConnectionError:
            pass
        except Exception as exc:
            self.errors.append(exc)
        finally:
            writer.close()


def answering(*answers: bytes) -> Script:
    """Answer each request, on whichever connection it comes, with the next of `answers`."""
    queue = list(answers)

    async def script(peer: Peer) -> None:
        while queue and (await peer.request()) is not None:
            peer.send(queue.pop(0))
        await peer.until_ended()

    return script


def per_connection(first: Script, then: Script) -> Script:
    """`first` on the first connection, `then` on every later one."""

    async def script(peer: Peer) -> None:
        await (first if peer.number == 0 else then)(peer)

    return script


def ok(body: bytes = b"ok") -> bytes:
    """A 200 answer with a Content-Length body."""
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)


def chunked_ok(*chunks: bytes) -> bytes:
    """A 200 answer with a chunked body, one chunk for each piece."""
    framed = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for chunk in chunks)
    return b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + framed + b"0\r\n\r\n"


@dataclass
class Rig:
    """Frontends and pools made by one test, all stopped and closed after it."""

    frontends: list[ScriptServer] = field(default_factory=list)
    pools: list[UpstreamPool] = field(default_factory=list)

    async def frontend(self, script: Script) -> ScriptServer:
        frontend = ScriptServer(script)
        await frontend.start()
        self.frontends.append(frontend)
        return frontend

    def pool(self, frontend: ScriptServer, limit: int = 4, keepalive: float = 30.0) -> UpstreamPool:
        pool = UpstreamPool(frontend.origin, limit, keepalive)
        self.pools.append(pool)
        return pool


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    made = Rig()
    yield made
    for pool in made.pools:
        await pool.close()
    for frontend in made.frontends:
        await frontend.stop()
    assert [e for f in made.frontends for e in f.errors] == []


# ---------------------------------------------------------------------------------------------
# Helpers


class ClientSide(BaseProtocol):
    """The client connection a request body comes in on, as the body sees it: still open.

    A StreamReader only waits for more data while its protocol is connected; the relay's is the
    client's live connection.
    """

    @property
    def connected(self) -> bool:
        return True


def upload(*parts: bytes, end: bool = True) -> streams.StreamReader:
    """A request body as the relay hands it over: a StreamReader, fed `parts`."""
    loop = asyncio.get_running_loop()
    # A limit above every body here: feeding never asks the (parser-less) protocol to pause.
    body = streams.StreamReader(ClientSide(loop), 2**22, loop=loop)
    for part in parts:
        body.feed_data(part)
    if end:
        body.feed_eof()
    return body


async def fetch(
    pool: UpstreamPool,
    method: str = "GET",
    target: str = "/",
    headers: Headers | None = None,
    body: streams.StreamReader | None = None,
    chunked: bool = False,
) -> tuple[int, bytes]:
    """One whole exchange: the answer's status and body, the connection released after."""
    async with asyncio.timeout(DEADLINE):
        exchange, answer = await pool.request(
            method, target, headers or [], body, chunked, TIME_LIMIT
        )
        try:
            return answer.status, await answer.body.read()
        finally:
            exchange.release()


async def ended(peer: Peer) -> None:
    """Wait until the client has closed the peer's connection; fail after the deadline."""
    async with asyncio.timeout(DEADLINE):
        await peer.ended.wait()


# ---------------------------------------------------------------------------------------------
# Keepalive and the keepalive race


@pytest.mark.parametrize(
    "first",
    [ok(b"one"), chunked_ok(b"o", b"ne"), b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"],
    ids=["content-length", "chunked", "empty"],
)
async def test_sequential_requests_share_one_connection(rig: Rig, first: bytes) -> None:
    """A complete answer leaves its connection open for the next request."""
    frontend = await rig.frontend(answering(first, ok(b"two")))
    pool = rig.pool(frontend)
    assert (await fetch(pool, target="/a"))[0] == 200
    assert await fetch(pool, target="/b") == (200, b"two")
    assert frontend.accepted == 1
    assert [r.line for r in frontend.peers[0].requests] == [
        b"GET /a HTTP/1.1",
        b"GET /b HTTP/1.1",
    ]


async def close_at_second_request(peer: Peer) -> None:
    """Answer one request, then read the next and close without a word (the keepalive race)."""
    await peer.request()
    peer.send(ok(b"first"))
    await peer.request()


@pytest.mark.parametrize("method", ["GET", "HEAD", "OPTIONS", "DELETE"])
async def test_bodiless_request_is_retried_once_when_a_kept_connection_closes(
    rig: Rig, method: str
) -> None:
    """A kept connection closed before any answer: a request without a body goes again, fresh."""
    # A HEAD answer is headers only: "2nd" would be bytes nobody asked for.
    again = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n" if method == "HEAD" else ok(b"2nd")
    frontend = await rig.frontend(per_connection(close_at_second_request, answering(again)))
    pool = rig.pool(frontend)
    assert await fetch(pool) == (200, b"first")
    status, body = await fetch(pool, method, "/again")
    assert status == 200
    assert body == (b"" if method == "HEAD" else b"2nd")
    assert frontend.accepted == 2
    assert frontend.peers[1].requests[0].head == frontend.peers[0].requests[1].head


@pytest.mark.parametrize("method", ["POST", "PATCH"])
async def test_non_idempotent_request_is_not_retried_even_without_a_body(
    rig: Rig, method: str
) -> None:
    """A proxy must not retry a non-idempotent request (RFC 9112 §9.3.1): it fails instead."""
    frontend = await rig.frontend(per_connection(close_at_second_request, answering(ok(b"2nd"))))
    pool = rig.pool(frontend)
    assert await fetch(pool) == (200, b"first")
    # The frontend may have acted on it before it closed: sending it again could act twice.
    with pytest.raises(UpstreamCut):
        await fetch(pool, method, "/confirm")
    assert frontend.accepted == 1


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
async def test_request_with_a_body_is_not_retried_when_a_kept_connection_closes(
    rig: Rig, chunked: bool
) -> None:
    """A kept connection closed before any answer: a request with a body fails, sent once."""
    frontend = await rig.frontend(per_connection(close_at_second_request, answering(ok(b"2nd"))))
    pool = rig.pool(frontend)
    assert await fetch(pool) == (200, b"first")
    headers = [] if chunked else [("Content-Length", "5")]
    with pytest.raises(UpstreamCut):
        await fetch(pool, "PUT", "/doc", headers, upload(b"hello"), chunked)
    assert frontend.accepted == 1
    assert frontend.peers[0].requests[1].body == b"hello"


async def test_kept_connection_that_sent_part_of_an_answer_is_not_retried(rig: Rig) -> None:
    """A kept connection cut after part of an answer: the request is not sent again."""

    async def first(peer: Peer) -> None:
        await peer.request()
        peer.send(ok(b"first"))
        await peer.request()
        peer.send(b"HTTP/1.1 200 OK\r\nContent-Le")

    frontend = await rig.frontend(per_connection(first, answering(ok(b"2nd"))))
    pool = rig.pool(frontend)
    assert await fetch(pool) == (200, b"first")
    with pytest.raises(UpstreamCut):
        await fetch(pool)
    assert frontend.accepted == 1


async def test_bodiless_request_after_a_close_right_after_an_answer_succeeds(rig: Rig) -> None:
    """The frontend closes right after answering (no Connection: close): the next GET works."""

    async def answer_and_close(peer: Peer) -> None:
        if await peer.request() is not None:
            peer.send(ok(b"bye"))

    frontend = await rig.frontend(answer_and_close)
    pool = rig.pool(frontend)
    assert await fetch(pool) == (200, b"bye")
    assert await fetch(pool) == (200, b"bye")
    assert frontend.accepted == 2


@pytest.mark.parametrize(
    "last",
    [
        b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nhi",
        b"HTTP/1.1 200 OK\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"2\r\nhi\r\n0\r\n\r\n",
        b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nhi",
    ],
    ids=["close-length", "close-chunked", "http-1.0"],
)
async def test_answer_that_ends_its_connection_retires_it(rig: Rig, last: bytes) -> None:
    """An answer with Connection: close, or an HTTP/1.0 one, is the last on its connection."""
    frontend = await rig.frontend(answering(last, ok()))
    pool = rig.pool(frontend)
    assert await fetch(pool) == (200, b"hi")
    await ended(frontend.peers[0])
    # The frontend's first connection still waits for a request: only a new one can be answered.
    assert await fetch(pool) == (200, b"ok")
    assert frontend.accepted == 2


async def test_idle_connections_past_keepalive_are_retired(rig: Rig) -> None:
    """With keepalive=0 an idle connection is never reused: the next request opens a new one."""
    frontend = await rig.frontend(answering(ok(b"one"), ok(b"two")))
    pool = rig.pool(frontend, keepalive=0)
    assert await fetch(pool) == (200, b"one")
    assert await fetch(pool) == (200, b"two")
    assert frontend.accepted == 2
    await ended(frontend.peers[0])


@pytest.mark.parametrize(
    "unasked",
    [b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", b"junk", b"\r\n"],
    ids=["answer", "junk", "crlf"],
)
async def test_bytes_sent_on_an_idle_connection_retire_it(rig: Rig, unasked: bytes) -> None:
    """Bytes the frontend sends on an idle kept connection: it is closed, never reused."""
    go = asyncio.Event()

    async def first(peer: Peer) -> None:
        await peer.request()
        peer.send(ok(b"one"))
        await go.wait()
        peer.send(unasked)
        await peer.until_ended()

    frontend = await rig.frontend(per_connection(first, answering(ok(b"two"))))
    pool = rig.pool(frontend)
    assert await fetch(pool) == (200, b"one")
    go.set()
    await ended(frontend.peers[0])
    assert await fetch(pool) == (200, b"two")
    assert frontend.accepted == 2
    assert len(frontend.peers[0].requests) == 1


async def test_close_ends_idle_connections(rig: Rig) -> None:
    """pool.close() closes the connections it keeps."""
    frontend = await rig.frontend(answering(ok(), ok()))
    pool = rig.pool(frontend)
    await fetch(pool)
    await pool.close()
    await ended(frontend.peers[0])


# ---------------------------------------------------------------------------------------------
# Answers without a body, interim answers, malformed answers


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"HTTP/1.1 404 Not Found\r\nContent-Length: 10\r\n\r\n",
    ],
    ids=["content-length", "chunked", "404"],
)
async def test_head_answer_has_no_body_and_keeps_the_connection(rig: Rig, answer: bytes) -> None:
    """A HEAD answer is headers only whatever its framing says; the connection is reused."""
    frontend = await rig.frontend(answering(answer, answer, ok(b"0123456789")))
    pool = rig.pool(frontend)
    for _ in range(2):
        async with asyncio.timeout(DEADLINE):
            exchange, head = await pool.request("HEAD", "/", [], None, False, TIME_LIMIT)
            try:
                assert head.status == int(answer[9:12])
                assert await head.body.read() == b""
                assert list(head.message.headers.items()) == [
                    (k.decode(), v.decode()) for k, v in Received(answer).headers()
                ]
            finally:
                exchange.release()
    assert await fetch(pool) == (200, b"0123456789")
    assert frontend.accepted == 1


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 204 No Content\r\n\r\n",
        b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n",
        b'HTTP/1.1 304 Not Modified\r\nETag: "v1"\r\n\r\n',
        b'HTTP/1.1 304 Not Modified\r\nETag: "v1"\r\nContent-Length: 10\r\n\r\n',
    ],
    ids=["204", "204-length-0", "304", "304-length-10"],
)
async def test_no_body_statuses_have_no_body_and_keep_the_connection(
    rig: Rig, answer: bytes
) -> None:
    """204 and 304 answers carry no body whatever their headers say; the connection is reused."""
    frontend = await rig.frontend(answering(answer, ok(b"next")))
    pool = rig.pool(frontend)
    status, body = await fetch(pool)
    assert status == int(answer[9:12])
    assert body == b""
    assert await fetch(pool) == (200, b"next")
    assert frontend.accepted == 1


@pytest.mark.parametrize(
    "interim",
    [
        [b"HTTP/1.1 100 Continue\r\n\r\n"],
        [b"HTTP/1.1 103 Early Hints\r\nLink: </app.css>; rel=preload; as=style\r\n\r\n"],
        [
            b"HTTP/1.1 100 Continue\r\n\r\n",
            b"HTTP/1.1 103 Early Hints\r\nLink: </a.js>; rel=preload\r\n\r\n",
            b"HTTP/1.1 103 Early Hints\r\nLink: </b.js>; rel=preload\r\n\r\n",
        ],
    ],
    ids=["100", "103", "100-103-103"],
)
@pytest.mark.parametrize("apart", [False, True], ids=["together", "apart"])
async def test_interim_answers_are_read_past(rig: Rig, interim: list[bytes], apart: bool) -> None:
    """1xx answers before the final one are skipped; the final answer and its body come through."""

    async def script(peer: Peer) -> None:
        while await peer.request() is not None:
            if apart:
                for piece in interim:
                    peer.send(piece)
                    await peer.writer.drain()
                peer.send(ok(b"final"))
            else:
                peer.send(b"".join(interim) + ok(b"final"))

    frontend = await rig.frontend(script)
    pool = rig.pool(frontend)
    assert await fetch(pool) == (200, b"final")
    assert await fetch(pool) == (200, b"final")
    assert frontend.accepted == 1


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
        b"HTTP/1.1 101 Switching Protocols\r\n\r\n",
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 101 Switching Protocols\r\n\r\n",
        b"garbage\r\n\r\n",
        b"HTTP/1.1 2000 OK\r\n\r\n",
        b"HTTP/1.1 OK\r\nContent-Length: 0\r\n\r\n",
        b"ICY 200 OK\r\n\r\n",
        b"HTTP/1.1 200 OK\r\n"
        + b"".join(b"X-%d: v\r\n" % i for i in range(300))
        + b"Content-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX-Long: " + b"a" * 70_000 + b"\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 " + b"O" * 70_000 + b"\r\nContent-Length: 0\r\n\r\n",
    ],
    ids=[
        "101-upgrade",
        "101-bare",
        "100-then-101",
        "garbage",
        "status-2000",
        "no-code",
        "icy",
        "300-headers",
        "long-header",
        "long-reason",
    ],
)
async def test_unreadable_answers_raise_malformed(rig: Rig, answer: bytes) -> None:
    """An unasked 101 or a broken status line raises MalformedAnswer; the connection is dropped."""

    async def first(peer: Peer) -> None:
        await peer.request()
        peer.send(answer)
        await peer.until_ended()

    frontend = await rig.frontend(per_connection(first, answering(ok(b"next"))))
    pool = rig.pool(frontend)
    with pytest.raises(MalformedAnswer):
        await fetch(pool)
    await ended(frontend.peers[0])
    assert await fetch(pool) == (200, b"next")
    assert frontend.accepted == 2


# ---------------------------------------------------------------------------------------------
# Bodies: whole, delimited by close, cut short


async def close_delimited(peer: Peer, body: bytes) -> None:
    """Answer without length or chunking, in several writes, and end the body by closing."""
    await peer.request()
    peer.send(b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n\r\n")
    for start in range(0, len(body), 100_000):
        peer.send(body[start : start + 100_000])
        await peer.writer.drain()


@pytest.mark.parametrize("body", [b"hello, until the end", LARGE], ids=["small", "large"])
async def test_body_delimited_by_close_is_read_whole(rig: Rig, body: bytes) -> None:
    """An answer without length or chunking is read until the connection ends, whole."""

    async def script(peer: Peer) -> None:
        await close_delimited(peer, body)

    frontend = await rig.frontend(script)
    pool = rig.pool(frontend)
    assert await fetch(pool) == (200, body)
    # The connection that ended the body is not kept: the next request opens another.
    assert await fetch(pool) == (200, body)
    assert frontend.accepted == 2


@pytest.mark.parametrize(
    "answer",
    [ok(LARGE), chunked_ok(*(LARGE[i : i + 50_000] for i in range(0, len(LARGE), 50_000)))],
    ids=["content-length", "chunked"],
)
async def test_large_bodies_pass_flow_control_whole(rig: Rig, answer: bytes) -> None:
    """A body far past the read buffer arrives whole, and its connection is still reused."""
    frontend = await rig.frontend(answering(answer, ok(b"next")))
    pool = rig.pool(frontend)
    async with asyncio.timeout(DEADLINE):
        exchange, head = await pool.request("GET", "/", [], None, False, TIME_LIMIT)
        try:
            received = bytearray()
            while chunk := await head.body.readany():
                received += chunk
        finally:
            exchange.release()
    assert received == LARGE
    assert await fetch(pool) == (200, b"next")
    assert frontend.accepted == 1


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789",
        b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\na\r\n0123456789\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n14\r\n0123",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
    ],
    ids=["length-part", "length-none", "chunked-no-last", "chunked-mid-chunk", "chunked-none"],
)
async def test_body_cut_short_by_close_raises_upstream_cut(rig: Rig, answer: bytes) -> None:
    """A body that ends before its length or its last chunk: reading it raises UpstreamCut."""

    async def script(peer: Peer) -> None:
        await peer.request()
        peer.send(answer)

    frontend = await rig.frontend(script)
    pool = rig.pool(frontend)
    async with asyncio.timeout(DEADLINE):
        exchange, head = await pool.request("GET", "/", [], None, False, TIME_LIMIT)
        try:
            assert head.status == 200
            with pytest.raises(UpstreamCut):
                await head.body.read()
        finally:
            exchange.release()


async def test_broken_chunk_framing_raises_upstream_cut(rig: Rig) -> None:
    """A chunked body whose framing breaks midway: reading it raises UpstreamCut."""
    go = asyncio.Event()

    async def script(peer: Peer) -> None:
        await peer.request()
        peer.send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
        await go.wait()
        peer.send(b"zz\r\n")
        await peer.until_ended()

    frontend = await rig.frontend(script)
    pool = rig.pool(frontend)
    async with asyncio.timeout(DEADLINE):
        exchange, head = await pool.request("GET", "/", [], None, False, TIME_LIMIT)
        try:
            assert await head.body.readany() == b"hello"
            go.set()
            with pytest.raises(UpstreamCut):
                await head.body.read()
        finally:
            exchange.release()
    await ended(frontend.peers[0])


# ---------------------------------------------------------------------------------------------
# Time limit and pool limit


@pytest.mark.parametrize("sent", [b"", b"HTTP/1.1 200 OK\r\nContent-"], ids=["silent", "part"])
async def test_answer_head_late_raises_timeout_and_closes(rig: Rig, sent: bytes) -> None:
    """No whole answer head within the time limit: TimeoutError, and the connection is closed."""

    async def first(peer: Peer) -> None:
        await peer.request()
        peer.send(sent)
        await peer.until_ended()

    frontend = await rig.frontend(per_connection(first, answering(ok(b"next"))))
    pool = rig.pool(frontend, limit=1)
    async with asyncio.timeout(DEADLINE) as outer:
        with pytest.raises(TimeoutError):
            await pool.request("GET", "/", [], None, False, 0.2)
    assert not outer.expired()
    await ended(frontend.peers[0])
    # Its slot was given back: with limit=1 another request still gets through.
    assert await fetch(pool) == (200, b"next")


async def test_cancelled_request_closes_its_connection_and_frees_its_slot(rig: Rig) -> None:
    """A request cancelled while awaiting its answer: the connection closes, the slot is free."""

    async def first(peer: Peer) -> None:
        await peer.request()
        await peer.until_ended()

    frontend = await rig.frontend(per_connection(first, answering(ok(b"next"))))
    pool = rig.pool(frontend, limit=1)
    waiting = asyncio.ensure_future(pool.request("GET", "/", [], None, False, TIME_LIMIT))
    await eventually(
        lambda: len(frontend.peers) == 1 and bool(frontend.peers[0].requests), DEADLINE
    )
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    await ended(frontend.peers[0])
    assert await fetch(pool) == (200, b"next")


async def test_unreachable_origin_raises_os_error_and_frees_its_slot(rig: Rig) -> None:
    """Nothing listening: request() raises an OSError each time, and the slot is never kept."""
    frontend = await rig.frontend(answering())
    await frontend.stop()
    pool = rig.pool(frontend, limit=1)
    for _ in range(2):
        async with asyncio.timeout(DEADLINE):
            with pytest.raises(OSError):
                await pool.request("GET", "/", [], None, False, TIME_LIMIT)


async def test_answer_released_unread_retires_the_connection(rig: Rig) -> None:
    """An exchange released before its body was read: the connection is closed, not reused."""
    frontend = await rig.frontend(answering(ok(LARGE), ok(b"next")))
    pool = rig.pool(frontend)
    async with asyncio.timeout(DEADLINE):
        exchange, answer = await pool.request("GET", "/", [], None, False, TIME_LIMIT)
    assert answer.status == 200
    exchange.release()
    await ended(frontend.peers[0])
    assert await fetch(pool) == (200, b"next")
    assert frontend.accepted == 2


async def test_request_beyond_the_limit_waits_and_times_out_without_connecting(rig: Rig) -> None:
    """With limit=1 and an exchange held, another request waits for the slot, never connecting."""
    frontend = await rig.frontend(answering(ok(b"one"), ok(b"two")))
    pool = rig.pool(frontend, limit=1)
    async with asyncio.timeout(DEADLINE) as outer:
        held, _ = await pool.request("GET", "/", [], None, False, TIME_LIMIT)
        with pytest.raises(TimeoutError):
            await pool.request("GET", "/", [], None, False, 0.2)
    assert not outer.expired()
    assert frontend.accepted == 1
    held.release()
    assert await fetch(pool) == (200, b"two")
    assert frontend.accepted == 1


async def test_waiting_request_takes_the_released_connection(rig: Rig) -> None:
    """With limit=1 a waiting request goes when the held exchange is released, on its connection."""
    frontend = await rig.frontend(answering(ok(b"one"), ok(b"two")))
    pool = rig.pool(frontend, limit=1)
    async with asyncio.timeout(DEADLINE):
        held, answer = await pool.request("GET", "/", [], None, False, TIME_LIMIT)
        assert await answer.body.read() == b"one"
        waiting = asyncio.ensure_future(fetch(pool))
        # Let it run as far as it can: it must park on the slot, not open a second connection.
        done, _ = await asyncio.wait({waiting}, timeout=0.1)
        assert not done
        assert frontend.accepted == 1
        held.release()
        assert await waiting == (200, b"two")
    # Had it not waited, no idle connection existed for it: it would have opened a second one.
    assert frontend.accepted == 1


async def test_limit_bounds_connections_under_concurrency(rig: Rig) -> None:
    """Many concurrent requests through a pool of 2: never more than 2 connections are opened."""
    frontend = await rig.frontend(answering(*(ok(b"%d" % i) for i in range(12))))
    pool = rig.pool(frontend, limit=2)
    results = await asyncio.gather(*(fetch(pool, target=f"/{i}") for i in range(12)))
    assert sorted(body for _, body in results) == sorted(b"%d" % i for i in range(12))
    assert frontend.accepted <= 2


# ---------------------------------------------------------------------------------------------
# Uploads


async def test_chunked_upload_streams_as_valid_chunks(rig: Rig) -> None:
    """A body sent chunked goes up piece by piece as it arrives, in valid chunked framing."""
    frontend = await rig.frontend(answering(ok(b"stored")))
    pool = rig.pool(frontend)
    peers = frontend.peers
    body = upload(end=False)
    async with asyncio.timeout(DEADLINE):
        sent = asyncio.ensure_future(pool.request("POST", "/up", [], body, True, TIME_LIMIT))
        body.feed_data(b"hello")
        await eventually(lambda: len(peers) == 1 and peers[0].chunks == [b"hello"], DEADLINE)
        body.feed_data(b" world\r\n0\r\n\r\n")
        await eventually(lambda: len(peers[0].chunks) == 2, DEADLINE)
        body.feed_eof()
        exchange, answer = await sent
        try:
            assert await answer.body.read() == b"stored"
        finally:
            exchange.release()
    received = peers[0].requests[0]
    assert received.header(b"Transfer-Encoding") == [b"chunked"]
    assert received.header(b"Content-Length") == []
    assert received.body == b"hello world\r\n0\r\n\r\n"
    assert received.wire_body == b"5\r\nhello\r\nd\r\n world\r\n0\r\n\r\n\r\n0\r\n\r\n"


@pytest.mark.parametrize("data", [b"", b"hello world", LARGE], ids=["empty", "small", "large"])
@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
async def test_upload_arrives_unchanged(rig: Rig, data: bytes, chunked: bool) -> None:
    """A body arrives byte for byte: as is under Content-Length, in valid chunks when chunked."""
    frontend = await rig.frontend(answering(ok(b"stored"), ok(b"next")))
    pool = rig.pool(frontend)
    headers = [] if chunked else [("Content-Length", str(len(data)))]
    assert await fetch(pool, "PUT", "/doc", headers, upload(data), chunked) == (200, b"stored")
    received = frontend.peers[0].requests[0]
    assert received.body == data
    if chunked:
        assert received.header(b"Transfer-Encoding") == [b"chunked"]
        assert received.wire_body.endswith(b"0\r\n\r\n")
    else:
        assert received.header(b"Transfer-Encoding") == []
        assert received.wire_body == data
    # The framing ended where the frontend expected: the connection carries the next request.
    assert await fetch(pool) == (200, b"next")
    assert frontend.accepted == 1


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
async def test_early_answer_during_upload_retires_the_connection(rig: Rig, chunked: bool) -> None:
    """The frontend answers (413) before the body is all up: the connection is not reused."""

    async def first(peer: Peer) -> None:
        await peer.head()
        peer.send(b"HTTP/1.1 413 Content Too Large\r\nContent-Length: 0\r\n\r\n")
        await peer.until_ended()

    frontend = await rig.frontend(per_connection(first, answering(ok(b"next"))))
    pool = rig.pool(frontend)
    headers = [] if chunked else [("Content-Length", "1000")]
    body = upload(b"the first part", end=False)
    assert await fetch(pool, "POST", "/up", headers, body, chunked) == (413, b"")
    await ended(frontend.peers[0])
    assert await fetch(pool) == (200, b"next")
    assert frontend.accepted == 2


async def test_failed_client_body_cuts_the_upload(rig: Rig) -> None:
    """A client body that breaks off: the frontend never sees a last chunk, the request fails."""
    wire = bytearray()

    async def script(peer: Peer) -> None:
        await peer.head()
        wire.extend(await peer.until_ended())

    frontend = await rig.frontend(script)
    pool = rig.pool(frontend)
    body = upload(b"partial", end=False)
    async with asyncio.timeout(DEADLINE):
        sent = asyncio.ensure_future(pool.request("POST", "/up", [], body, True, TIME_LIMIT))
        await eventually(
            lambda: len(frontend.peers) == 1 and bool(frontend.peers[0].requests), DEADLINE
        )
        body.set_exception(aiohttp.ClientPayloadError("the client went away"))
        with pytest.raises(UpstreamCut):
            await sent
    await ended(frontend.peers[0])
    assert not wire.endswith(b"0\r\n\r\n")


# ---------------------------------------------------------------------------------------------
# The request head


@pytest.mark.parametrize(
    ("headers", "chunked", "expected"),
    [
        ([], False, b"GET /x?y=1 HTTP/1.1\r\nHost: app.test:81\r\n\r\n"),
        (
            [("Accept", "*/*"), ("X-Two", "a"), ("X-Two", "b")],
            False,
            b"GET /x?y=1 HTTP/1.1\r\nAccept: */*\r\nX-Two: a\r\nX-Two: b\r\n"
            b"Host: app.test:81\r\n\r\n",
        ),
        (
            [("host", "given.test"), ("Accept", "*/*")],
            False,
            b"GET /x?y=1 HTTP/1.1\r\nhost: given.test\r\nAccept: */*\r\n\r\n",
        ),
        (
            [("Host", "given.test")],
            True,
            b"GET /x?y=1 HTTP/1.1\r\nHost: given.test\r\nTransfer-Encoding: chunked\r\n\r\n",
        ),
        (
            [("X-Empty", "")],
            False,
            b"GET /x?y=1 HTTP/1.1\r\nX-Empty: \r\nHost: app.test:81\r\n\r\n",
        ),
    ],
    ids=["no-headers", "in-order", "host-kept", "chunked", "empty-value"],
)
def test_request_head_is_written_as_given(headers: Headers, chunked: bool, expected: bytes) -> None:
    """The head is the headers in order; Host is added only when absent, never duplicated."""
    assert _request_head("GET", "/x?y=1", headers, "app.test:81", chunked) == expected


@pytest.mark.parametrize(
    ("method", "target", "headers"),
    [
        ("GET", "/", [("X-A", "one\r\nX-Injected: 1")]),
        ("GET", "/", [("X-A", "one\nX-Injected: 1")]),
        ("GET", "/", [("X-A", "one\rtwo")]),
        ("GET", "/", [("X-A", "trailing\r")]),
        ("GET", "/", [("X-A\r\nX-Injected", "1")]),
        ("GET", "/ HTTP/1.1\r\nX-Injected: 1\r\nX:", []),
        ("GET", "/", [("Host", "app.test\r\n")]),
    ],
    ids=["crlf", "lf", "cr", "trailing-cr", "in-name", "in-target", "in-host"],
)
def test_line_breaks_in_the_head_are_refused(method: str, target: str, headers: Headers) -> None:
    """A CR or LF anywhere inside the request line or a header raises ValueError."""
    with pytest.raises(ValueError, match="line break"):
        _request_head(method, target, headers, "app.test", False)


async def test_refused_head_sends_nothing_and_frees_its_slot(rig: Rig) -> None:
    """A line break in a header: ValueError from request(), nothing opened, no slot held."""
    frontend = await rig.frontend(answering(ok()))
    pool = rig.pool(frontend, limit=1)
    for _ in range(2):
        with pytest.raises(ValueError):
            await pool.request("GET", "/", [("X-A", "1\r\nX-B: 2")], None, False, TIME_LIMIT)
    assert frontend.accepted == 0
    assert await fetch(pool) == (200, b"ok")


@pytest.mark.parametrize(
    ("origin", "host"),
    [
        ("http://127.0.0.1:8080", "127.0.0.1:8080"),
        ("http://app.test", "app.test"),
        ("http://app.test:80", "app.test"),
        ("https://app.test", "app.test"),
        ("https://app.test:8443", "app.test:8443"),
        ("http://[::1]:9000", "[::1]:9000"),
    ],
)
def test_default_host_is_the_origins_host_and_port(origin: str, host: str) -> None:
    """Without a Host header the request names the origin, its port only when not the default."""
    assert UpstreamPool(URL(origin), 1, 1.0).host_header == host


async def test_host_reaches_the_frontend_once(rig: Rig) -> None:
    """On the wire: a missing Host becomes the origin's host:port; a given one is kept, alone."""
    frontend = await rig.frontend(answering(ok(), ok()))
    pool = rig.pool(frontend)
    await fetch(pool)
    await fetch(pool, headers=[("Host", "app.example")])
    first, second = frontend.peers[0].requests
    assert first.header(b"Host") == [b"127.0.0.1:%d" % frontend.port]
    assert second.header(b"Host") == [b"app.example"]


async def test_non_ascii_bytes_leave_byte_for_byte(rig: Rig) -> None:
    """Header and target bytes that came in surrogate-escaped reach the frontend unchanged."""
    raw_value = b"caf\xc3\xa9 \xff\xfe \xe2\x82"
    raw_target = b"/caf\xc3\xa9/\xff"
    value = raw_value.decode("utf-8", "surrogateescape")
    target = raw_target.decode("utf-8", "surrogateescape")
    frontend = await rig.frontend(answering(ok()))
    pool = rig.pool(frontend)
    await fetch(pool, target=target, headers=[("X-Name", value), ("X-Real", "é")])
    received = frontend.peers[0].requests[0]
    assert received.line == b"GET " + raw_target + b" HTTP/1.1"
    assert received.header(b"X-Name") == [raw_value]
    assert received.header(b"X-Real") == ["é".encode()]


async def test_answer_carries_status_reason_and_a_releasable_exchange(rig: Rig) -> None:
    """request() gives the status, the reason and an Exchange whose release keeps the connection."""
    frontend = await rig.frontend(answering(ok(), ok()))
    pool = rig.pool(frontend)
    async with asyncio.timeout(DEADLINE):
        exchange, answer = await pool.request("GET", "/", [], None, False, TIME_LIMIT)
    assert isinstance(exchange, Exchange)
    assert (answer.status, answer.reason) == (200, "OK")
    assert await answer.body.read() == b"ok"
    exchange.release()
    assert await fetch(pool) == (200, b"ok")
    assert frontend.accepted == 1
