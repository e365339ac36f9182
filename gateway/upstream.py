"""A lean HTTP/1.1 client for the frontend: pooled keepalive connections on aiohttp's C parser.

aiohttp's ClientSession spends more per request on its own machinery (URL and header merging,
tracing hooks, cookie handling, timers, the connector's bookkeeping) than the gateway spends on
everything else together (bench/profile.sh: 57 of 147 µs). The relay needs none of it: the
request line and headers are already checked and built, so here they are written as they are,
and the answer is read by the same parser aiohttp uses (`aiohttp.http_parser`, llhttp in C),
into the same flow-controlled StreamReader. WebSockets still go through ClientSession.

Over 350 lines on purpose: the pool, the connection protocol and one exchange share a state
machine (a connection is idle, busy, or retired after a stray byte), and splitting them would put
its rules in two places.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass

from aiohttp.base_protocol import BaseProtocol
from aiohttp.http_parser import HttpResponseParser, RawResponseMessage
from aiohttp.streams import EMPTY_PAYLOAD, StreamReader
from yarl import URL

from gateway.forwarded import Headers
from gateway.upstream_tls import ClientTls

# StreamReader's buffer limit: above twice this, reading from the frontend pauses.
READ_BUFFER_BYTES = 2**16
# An answer's status line and each header line may be this long (aiohttp's client allows 8190).
MAX_ANSWER_LINE_BYTES = 65536
MAX_ANSWER_HEADERS = 256
CONNECT_TIMEOUT = 10.0
# Interim answers (100 Continue, 103 Early Hints) are read past; 101 is never asked for here.
_INTERIM = range(100, 200)
_NO_BODY_STATUSES = frozenset({204, 304})
_LAST_CHUNK = b"0\r\n\r\n"
# llhttp runs lenient under aiohttp: it takes `Content-Length : 6` as a header named
# "Content-Length " and control bytes in values. Relayed, those are read differently by whatever
# parses them next, so an answer with a name that is not a token, or a value with CR, LF or NUL,
# is refused here (all names joined, then all values joined: two scans per answer).
_TOKENS = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_BREAKS = re.compile(rb"[\r\n\x00]")
# Only these may be sent again after a connection failed before any answer (RFC 9112 9.3.1): a
# POST the frontend may have acted on before it closed must not run twice.
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})


class UpstreamCut(ConnectionError):
    """The frontend broke off an answer (or a connection) before it was complete."""


class MalformedAnswer(Exception):
    """The frontend's answer is not HTTP/1.x the gateway can relay."""


class UnsendableRequest(ValueError):
    """A header value would break the request's framing (a CR or LF in it)."""


class Connection(BaseProtocol):
    """One keepalive connection to the frontend, used by one exchange at a time."""

    def __init__(self, loop: asyncio.AbstractEventLoop, pool: UpstreamPool) -> None:
        super().__init__(loop)
        self._pool = pool
        self._head: asyncio.Future[tuple[RawResponseMessage, StreamReader]] | None = None
        self._payload: StreamReader | None = None
        self._heads_answered = False
        self._should_close = False
        self.in_use = False
        self.received = False
        self.idle_since = 0.0

    def begin(self, head_only: bool) -> asyncio.Future[tuple[RawResponseMessage, StreamReader]]:
        """Get ready to read one answer; the future is its head."""
        if self._parser is None or head_only != self._heads_answered:
            # HEAD answers carry no body whatever their Content-Length says: llhttp must know.
            self._parser = HttpResponseParser(
                self,
                self._loop,
                READ_BUFFER_BYTES,
                max_line_size=MAX_ANSWER_LINE_BYTES,
                max_field_size=MAX_ANSWER_LINE_BYTES,
                max_headers=MAX_ANSWER_HEADERS,
                payload_exception=UpstreamCut,
                response_with_body=not head_only,
                read_until_eof=True,
                auto_decompress=False,
            )
            self._heads_answered = head_only
        self._payload = None
        self.in_use = True
        self.received = False
        self._head = self._loop.create_future()
        return self._head

    @property
    def reusable(self) -> bool:
        return (
            not self._should_close
            and self.transport is not None
            and not self.transport.is_closing()
            and self._head is None
            and self._payload is not None
            and self._payload.is_eof()
        )

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        self._should_close = True
        if self.transport is not None:
            self.transport.abort()

    def time_out(self) -> None:
        """The head did not arrive in time: give up on this connection."""
        head = self._head
        if head is not None and not head.done():
            head.set_exception(TimeoutError())
        self.abort()

    def data_received(self, data: bytes) -> None:
        parser = self._parser
        if not self.in_use or parser is None:
            if data:
                # Bytes nobody asked for: the connection cannot be trusted for another exchange.
                self.abort()
            return
        if data:
            self.received = True
        try:
            messages, _, _ = parser.feed_data(data)
        except Exception as exc:
            # The parser's message quotes the offending line, which may be a Set-Cookie: only
            # its kind is kept (it reaches the log).
            kind = type(exc).__name__
            self._fail(MalformedAnswer(f"the application's answer could not be read ({kind})"))
            return
        for message, payload in messages:
            head = self._head
            if message.code in _INTERIM:
                if message.code == 101:
                    self._fail(MalformedAnswer("the application switched protocols unasked"))
                    return
                continue
            if head is None:
                self._fail(MalformedAnswer("the application sent an answer nobody asked for"))
                return
            raw = message.raw_headers
            if raw and (
                _TOKENS.fullmatch(b"".join(name for name, _ in raw)) is None
                or _BREAKS.search(b"".join(value for _, value in raw)) is not None
            ):
                self._fail(MalformedAnswer("the application's answer has a malformed header"))
                return
            self._head = None
            self._payload = payload
            if message.should_close:
                self._should_close = True
            if not head.done():
                head.set_result((message, payload))

    def _fail(self, exc: Exception) -> None:
        head = self._head
        if head is not None and not head.done():
            head.set_exception(exc)
        if self._payload is not None and not self._payload.is_eof():
            self._payload.set_exception(UpstreamCut(str(exc)))
        self.abort()

    def connection_lost(self, exc: BaseException | None) -> None:
        self._should_close = True
        self._pool.forget(self)
        parser, payload = self._parser, self._payload
        if parser is not None and payload is not None and not payload.is_eof():
            try:
                # An answer read until the connection ends finishes here; others are cut short.
                parser.feed_eof()
            except Exception as error:
                payload.set_exception(UpstreamCut(f"the application broke off its answer: {error}"))
        head = self._head
        if head is not None and not head.done():
            head.set_exception(UpstreamCut(f"the application closed the connection ({exc})"))
        super().connection_lost(exc)

    async def drain(self) -> None:
        await self._drain_helper()


@dataclass(slots=True)
class Answer:
    """The head of the frontend's answer and its body, still arriving."""

    message: RawResponseMessage
    body: StreamReader

    @property
    def status(self) -> int:
        return self.message.code

    @property
    def reason(self) -> str:
        return self.message.reason


class Exchange:
    """One request on a pooled connection. `release()` must follow, whatever happened."""

    def __init__(self, pool: UpstreamPool, connection: Connection) -> None:
        self._pool = pool
        self._connection = connection
        self._sender: asyncio.Task[None] | None = None

    def send_body(self, body: StreamReader, chunked: bool) -> None:
        """Stream the client's body up beside reading the answer (a frontend may answer early)."""
        self._sender = asyncio.ensure_future(self._send(body, chunked))

    async def _send(self, body: StreamReader, chunked: bool) -> None:
        connection = self._connection
        try:
            while True:
                chunk = await body.readany()
                if not chunk:
                    break
                transport = connection.transport
                if transport is None:
                    return
                if chunked:
                    transport.writelines((b"%x\r\n" % len(chunk), chunk, b"\r\n"))
                else:
                    transport.write(chunk)
                await connection.drain()
            if chunked and connection.transport is not None:
                connection.transport.write(_LAST_CHUNK)
        except Exception:
            # The client's body failed (malformed or cut): the frontend must not take a partial
            # body for a whole one, and the waiting exchange learns of it through the abort.
            connection.abort()

    def abandon(self) -> None:
        """Give the connection up (the exchange failed): it is closed, never reused."""
        if self._sender is not None and not self._sender.done():
            self._sender.cancel()
        self._connection.in_use = False
        self._connection.abort()

    def release(self) -> None:
        """The answer has been relayed (or given up): the connection goes back or is closed."""
        sender = self._sender
        connection = self._connection
        if sender is not None and not sender.done():
            # The frontend answered before the whole body went up: the rest cannot follow.
            sender.cancel()
            connection.abort()
        connection.in_use = False
        self._pool.release(connection, connection.reusable)


class UpstreamPool:
    """Keepalive connections to one frontend origin, at most `limit` of them busy at once."""

    def __init__(
        self, origin: URL, limit: int, keepalive: float, tls: ClientTls | None = None
    ) -> None:
        self._host = origin.raw_host or ""
        self._port = origin.port or (443 if origin.scheme == "https" else 80)
        https = origin.scheme == "https"
        self._tls = (tls or ClientTls(None)) if https else None
        # The name the certificate is checked against, and sent as SNI.
        self._server_name = (tls.server_name if tls is not None else None) or self._host
        # For a request without a Host (HTTP/1.0), as aiohttp's client would send it.
        self.host_header = origin.host_port_subcomponent or self._host
        self._keepalive = keepalive
        self._slots = asyncio.Semaphore(limit)
        self._idle: list[Connection] = []
        self._open: set[Connection] = set()
        self._event_loop: asyncio.AbstractEventLoop | None = None

    @property
    def _loop(self) -> asyncio.AbstractEventLoop:
        # Looked up once: on Python 3.11 every asyncio.get_running_loop() costs a getpid() call.
        if self._event_loop is None:
            self._event_loop = asyncio.get_running_loop()
        return self._event_loop

    async def _connect(self) -> Connection:
        loop = self._loop
        tls = self._tls
        _, connection = await loop.create_connection(
            lambda: Connection(loop, self),
            self._host,
            self._port,
            ssl=None if tls is None else tls.context,
            server_hostname=None if tls is None else self._server_name,
        )
        self._open.add(connection)
        return connection

    def _pooled(self, now: float) -> Connection | None:
        while self._idle:
            connection = self._idle.pop()
            transport = connection.transport
            if (
                now - connection.idle_since < self._keepalive
                and transport is not None
                and not transport.is_closing()
            ):
                return connection
            connection.close()
        return None

    async def request(
        self,
        method: str,
        target: str,
        headers: Headers,
        body: StreamReader | None,
        chunked: bool,
        time_limit: float,
    ) -> tuple[Exchange, Answer]:
        """Send a request and wait for its answer's head, all within `time_limit` seconds.

        An idempotent request without a body is sent again once on a fresh connection when a
        reused one turns out to have been closed by the frontend before it answered (a keepalive
        race); anything else could run twice, and fails instead.
        """
        loop = self._loop
        deadline = loop.time() + time_limit
        head = _request_head(method, target, headers, self.host_header, chunked)
        if self._slots.locked():
            async with asyncio.timeout_at(deadline):
                await self._slots.acquire()
        else:
            await self._slots.acquire()
        try:
            return await self._send(head, method, body, chunked, deadline)
        except BaseException:
            self._slots.release()
            raise

    async def _send(
        self,
        head: bytes,
        method: str,
        body: StreamReader | None,
        chunked: bool,
        deadline: float,
    ) -> tuple[Exchange, Answer]:
        """On a pooled connection if there is one, else a new one; on a new one once more when a
        reused connection was closed by the frontend before it answered (see request)."""
        connection = self._pooled(self._loop.time())
        reused = connection is not None
        while True:
            if connection is None:
                async with asyncio.timeout_at(deadline):
                    connection = await self._connect()
            exchange = Exchange(self, connection)
            try:
                answer = await self._exchange(
                    connection, exchange, head, method, body, chunked, deadline
                )
            except UpstreamCut:
                exchange.abandon()
                retry = reused and body is None and method in IDEMPOTENT_METHODS
                if not retry or connection.received:
                    raise
                connection, reused = None, False
                continue
            except BaseException:
                exchange.abandon()
                raise
            return exchange, answer

    async def _exchange(
        self,
        connection: Connection,
        exchange: Exchange,
        head: bytes,
        method: str,
        body: StreamReader | None,
        chunked: bool,
        deadline: float,
    ) -> Answer:
        waiter = connection.begin(head_only=method == "HEAD")
        assert connection.transport is not None
        connection.transport.write(head)
        if body is not None:
            exchange.send_body(body, chunked)
        timer = self._loop.call_at(deadline, connection.time_out)
        try:
            message, payload = await waiter
        finally:
            timer.cancel()
        if method == "HEAD" or message.code in _NO_BODY_STATUSES:
            payload = EMPTY_PAYLOAD
        return Answer(message, payload)

    def release(self, connection: Connection, reusable: bool) -> None:
        """An exchange is over: keep its connection for the next one, or close it."""
        if reusable:
            connection.idle_since = self._loop.time()
            self._idle.append(connection)
        else:
            connection.close()
        self._slots.release()

    def forget(self, connection: Connection) -> None:
        self._open.discard(connection)
        if connection in self._idle:
            self._idle.remove(connection)

    async def close(self) -> None:
        for connection in list(self._open):
            connection.close()
        self._idle.clear()


def _request_head(
    method: str, target: str, headers: Headers, default_host: str, chunked: bool
) -> bytes:
    """The request line and headers as bytes, exactly as given (values were checked upstream)."""
    lines = [f"{method} {target} HTTP/1.1\r\n"]
    has_host = False
    for name, value in headers:
        if not has_host and name.lower() == "host":
            has_host = True
        lines.append(f"{name}: {value}\r\n")
    if not has_host:
        lines.append(f"Host: {default_host}\r\n")
    if chunked:
        lines.append("Transfer-Encoding: chunked\r\n")
    lines.append("\r\n")
    text = "".join(lines)
    # Each line ends in exactly one CR LF: a value carrying its own would split the request.
    if text.count("\n") != len(lines) or text.count("\r") != len(lines):
        raise UnsendableRequest("a header carries a line break")
    # Header bytes came in as UTF-8 with surrogate escapes; they leave byte for byte.
    return text.encode("utf-8", "surrogateescape")
