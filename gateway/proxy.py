"""The relay: one request to the frontend and its answer back, streamed both ways, and websockets.

Bodies are never held whole: each chunk is written on as it arrives, so a 1 GB upload or download, a
chunked response or a server-sent-events stream passes through in constant memory.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass

import aiohttp
import structlog
from aiohttp import WSMsgType, web
from aiohttp.streams import StreamReader
from multidict import CIMultiDictProxy
from yarl import URL

from gateway.aiohttp_internals import OmitsDefaultHeaders, head_with_body
from gateway.errors import (
    BadRequest,
    BadRequestBody,
    GatewayError,
    UpstreamTimeout,
    UpstreamUnreachable,
)
from gateway.forwarded import HOP_BY_HOP, Headers, header_tokens
from gateway.metrics import Metrics
from gateway.responses import AS_SENT, AnswerRules, error_response
from gateway.upstream import Answer, MalformedAnswer, UnsendableRequest, UpstreamCut, UpstreamPool
from gateway.upstream_tls import verify_failure

log = structlog.get_logger("gateway.proxy")

CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
# Bodies up to this size (by Content-Length) are relayed in one piece; larger ones are streamed.
SMALL_BODY_BYTES = 64 * 1024
# Close codes that describe a connection's end but must never be sent in a close frame.
_UNSENDABLE_CLOSE_CODES = {1005: 1000, 1006: 1011, 1015: 1011}
# A WebSocket message bigger than this is refused rather than buffered (both sides).
MAX_WEBSOCKET_MESSAGE_BYTES = 16 * 1024 * 1024


class RelayResponse(OmitsDefaultHeaders):
    """The frontend's answer as it sent it: its end-to-end headers, nothing added (no Server, no
    Content-Type). Hop-by-hop headers and those its Connection header names are left out."""

    def __init__(self, status: int, reason: str, upstream: CIMultiDictProxy[str]) -> None:
        super().__init__(status=status, reason=reason)
        # Filled in place: passing a headers mapping to StreamResponse would copy it again.
        headers = self.headers
        named = header_tokens(upstream.getall("Connection", ()))
        for name, value in upstream.items():
            key = name.lower()
            if key not in HOP_BY_HOP and key not in named:
                headers.add(name, value)


@dataclass(frozen=True, slots=True)
class Upstream:
    """The connections to one upstream origin: plain requests, WebSockets, and the name its
    certificate is checked against when that is not its host (upstream_tls.server_name)."""

    pool: UpstreamPool
    websockets: aiohttp.ClientSession
    server_name: str | None = None


class Relay:
    """Sends requests to one upstream: plain HTTP over the lean pool, WebSockets via aiohttp."""

    def __init__(self, upstream: Upstream, base: URL, timeout: float, metrics: Metrics) -> None:
        self._pool = upstream.pool
        self._session = upstream.websockets
        self._server_name = upstream.server_name
        self._metrics = metrics
        self._origin = str(base.origin())
        self._prefix = base.raw_path.rstrip("/")
        self._timeout = timeout

    def _failure(self, exc: BaseException) -> UpstreamTimeout | UpstreamUnreachable:
        """What to answer when the frontend cannot be reached, or does not answer in time."""
        if isinstance(exc, TimeoutError):
            self._metrics.upstream_errors.labels("timeout").inc()
            return UpstreamTimeout("the application did not answer in time")
        if isinstance(exc, MalformedAnswer):
            log.warning("upstream answer malformed", error=str(exc))
            self._metrics.upstream_errors.labels("malformed").inc()
            return UpstreamUnreachable("the application's answer could not be read")
        reason = verify_failure(exc)
        if reason is not None:
            # Never a plain retry: an upstream that cannot be verified is not the upstream.
            log.warning("upstream tls failed", error=reason)
            self._metrics.upstream_errors.labels("tls").inc()
            return UpstreamUnreachable("the application's certificate could not be verified")
        log.warning("upstream unreachable", error=type(exc).__name__)
        self._metrics.upstream_errors.labels("unreachable").inc()
        return UpstreamUnreachable("the application could not be reached")

    def target(self, path: str, query: str | None) -> str:
        """The request target upstream, from a path and query already normalized and checked."""
        return f"{self._prefix}{path}" if query is None else f"{self._prefix}{path}?{query}"

    async def http(
        self,
        request: web.BaseRequest,
        target: str,
        headers: Headers,
        answer: AnswerRules = AS_SENT,
    ) -> web.StreamResponse:
        """Relay one exchange; failures before the first byte raise, for a clean answer."""
        body = request.content if request.body_exists else None
        if body is not None and request.headers.get("Expect", "").lower() == "100-continue":
            # Only now, after auth, is the client told to send its body.
            await request.writer.write(CONTINUE)
        # A body without Content-Length came chunked, and goes up chunked.
        chunked = body is not None and "Content-Length" not in request.headers
        try:
            exchange, upstream = await self._pool.request(
                request.method, target, headers, body, chunked, self._timeout
            )
        except (TimeoutError, OSError, MalformedAnswer) as exc:
            if body is not None and body.exception() is not None:
                # A body the protocol cut off (stalled, too large) says why; else it was malformed.
                failure = body.exception()
                if isinstance(failure, GatewayError):
                    raise failure from None
                raise BadRequestBody("the request body is malformed") from None
            raise self._failure(exc) from None
        except UnsendableRequest:
            raise BadRequest("a request header cannot be forwarded") from None
        try:
            response = RelayResponse(upstream.status, upstream.reason, upstream.message.headers)
            answer.apply(response.headers)
            if answer.close:
                response.force_close()
            await self._send_body(request, upstream, response)
            return response
        finally:
            exchange.release()

    async def _send_body(
        self, request: web.BaseRequest, upstream: Answer, response: RelayResponse
    ) -> None:
        message = upstream.message
        length = _content_length(message.headers)
        if length is None or length > SMALL_BODY_BYTES or message.chunked:
            await response.prepare(request)
            await self._stream_body(request, upstream.body, response)
            return
        # Known small: read it whole, so a frontend that breaks off still gets a clean 502, and
        # the answer goes out in one write.
        try:
            payload = await upstream.body.read()
        except ConnectionError as exc:
            self._metrics.upstream_errors.labels("cut").inc()
            raise UpstreamUnreachable(
                f"the application broke off its answer ({type(exc).__name__})"
            ) from None
        head_with_body(response)
        await response.prepare(request)
        await response.write_eof(payload)

    async def _stream_body(
        self, request: web.BaseRequest, body: StreamReader, response: RelayResponse
    ) -> None:
        """Copy the body as it arrives. If the frontend breaks off, the client's connection is
        aborted and the unfinished response returned; a client that goes away raises
        ConnectionError, which the protocol handler logs as 499."""
        while True:
            try:
                chunk = await body.readany()
            except UpstreamCut as exc:
                # The frontend broke off: abort the client's connection rather than finish the
                # body (no final chunk), so a truncated download is never seen as complete.
                log.warning("upstream body cut", error=type(exc).__name__)
                self._metrics.upstream_errors.labels("cut").inc()
                if request.transport is not None:
                    request.transport.abort()
                return
            if not chunk:
                break
            await response.write(chunk)
        await response.write_eof()

    async def websocket(
        self,
        request: web.BaseRequest,
        target: str,
        headers: Headers,
        registry: dict[web.WebSocketResponse, aiohttp.ClientWebSocketResponse],
        request_id: str,
    ) -> web.StreamResponse:
        """Proxy a WebSocket: frames, pings and close codes pass through unchanged."""
        try:
            upstream = await self._connect_websocket(request, target, headers)
        except aiohttp.WSServerHandshakeError as exc:
            # The application refused the upgrade: its error status, in the gateway's own answer
            # (a 2xx or 3xx instead of 101 is an application fault: 502).
            status = exc.status if exc.status >= 400 else 502
            reason = "the application refused the WebSocket"
            return error_response(request.headers, status, reason, request_id)
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise self._failure(exc) from None
        client = web.WebSocketResponse(
            protocols=(upstream.protocol,) if upstream.protocol else (),
            autoclose=False,
            autoping=False,
            compress=False,
            max_msg_size=MAX_WEBSOCKET_MESSAGE_BYTES,
        )
        try:
            await client.prepare(request)
            # Registered so a graceful shutdown can close it with 1001.
            registry[client] = upstream
            self._metrics.websockets.inc()
            await _pump_both(client, upstream)
        finally:
            if registry.pop(client, None) is not None:
                self._metrics.websockets.dec()
            await upstream.close()
        return client

    async def _connect_websocket(
        self, request: web.BaseRequest, target: str, headers: Headers
    ) -> aiohttp.ClientWebSocketResponse:
        """The app's side of a WebSocket, asked for the client's subprotocols."""
        protocols = [
            p.strip()
            for value in request.headers.getall("Sec-WebSocket-Protocol", ())
            for p in value.split(",")
            if p.strip()
        ]
        async with asyncio.timeout(self._timeout):
            return await self._session.ws_connect(
                URL(self._origin + target, encoded=True),
                headers=headers,
                protocols=protocols,
                autoclose=False,
                autoping=False,
                compress=0,
                max_msg_size=MAX_WEBSOCKET_MESSAGE_BYTES,
                server_hostname=self._server_name,
            )


WebSocket = web.WebSocketResponse | aiohttp.ClientWebSocketResponse


async def _pump(source: WebSocket, sink: WebSocket) -> None:
    while True:
        message = await source.receive()
        kind = message.type
        if kind is WSMsgType.TEXT:
            await sink.send_str(message.data)
        elif kind is WSMsgType.BINARY:
            await sink.send_bytes(message.data)
        elif kind is WSMsgType.PING:
            await sink.ping(message.data)
        elif kind is WSMsgType.PONG:
            await sink.pong(message.data)
        elif kind is WSMsgType.CLOSE:
            code = _UNSENDABLE_CLOSE_CODES.get(message.data, message.data)
            await sink.close(code=code, message=(message.extra or "").encode())
            # The source's close is answered with its own code, as endpoints echo it (aiohttp
            # does not hand back the sink's reply when a receive is pending on it).
            await source.close(code=code)
            return
        elif kind is WSMsgType.CLOSING:
            # Our own close() of this socket (from the other direction or a shutdown) is under
            # way; that close reads the reply itself.
            return
        else:
            # CLOSED or ERROR: the source is gone without a close frame to pass on.
            await sink.close(code=1011 if kind is WSMsgType.ERROR else 1001)
            return


async def _pump_both(
    client: web.WebSocketResponse, upstream: aiohttp.ClientWebSocketResponse
) -> None:
    tasks = [
        asyncio.ensure_future(_pump(client, upstream)),
        asyncio.ensure_future(_pump(upstream, client)),
    ]
    try:
        _, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        # The other direction ends when its close reply arrives; give it a moment, no more.
        if pending:
            await asyncio.wait(pending, timeout=5)
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, ConnectionError, RuntimeError):
                await task


def _content_length(headers: CIMultiDictProxy[str]) -> int | None:
    value = headers.get("Content-Length")
    return int(value) if value is not None and value.isdigit() else None
