"""The client-facing connection: aiohttp's server protocol with the gateway's parse-error answers.

aiohttp stays at this edge: it parses requests (llhttp) and writes answers; what a request means
is decided by the stages in gateway/handler.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from aiohttp import web
from aiohttp.http_exceptions import BadHttpMessage, LineTooLong
from aiohttp.web_protocol import RequestHandler

from gateway.aiohttp_internals import (
    body_starved,
    parse_error_queued,
    queued_messages,
    too_many_headers,
)
from gateway.config import GatewayConfig, LimitsConfig
from gateway.errors import PayloadTooLarge, RequestTimeout
from gateway.forwarded import clean_ip, request_id_from
from gateway.limits import ConnectionGuard
from gateway.logs import AccessLog, AccessLogger, bind_request
from gateway.metrics import Metrics
from gateway.request import TOTAL_HEADER_FACTOR
from gateway.responses import REQUEST_TIMEOUT_ANSWER, client_gone, error_response

log = structlog.get_logger("gateway.protocol")

# The request line (method, target, version) may be this long; longer gets 414.
MAX_REQUEST_LINE_BYTES = 16384
MAX_HEADER_COUNT = 128
LISTEN_BACKLOG = 1024


class ProtocolHandler(RequestHandler):
    """aiohttp's connection handler with parse errors answered by status, never by exception text,
    and with the deadlines of limits: (gateway/limits.py sweeps them once a second).

    aiohttp answers an oversized header with 400 and quotes the offending line (a cookie) in the
    body and its log; here it is 431 (414 for the request line) with a fixed reason, quoting
    nothing.
    """

    __slots__ = ("_body_bytes", "_body_of", "_body_since", "_head_seen", "_head_since", "_limits")

    def configure(self, limits: LimitsConfig) -> None:
        self._limits = limits
        self._head_since: float | None = None
        self._head_seen = False
        self._body_of: web.BaseRequest | None = None
        self._body_bytes = 0
        self._body_since = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # The header deadline of a new connection runs from its accept: one that sends nothing
        # at all is closed after header_timeout too.
        self._head_since = self._loop.time()
        super().connection_made(transport)

    def data_received(self, data: bytes) -> None:
        queued = queued_messages(self)
        super().data_received(data)
        request = self._current_request
        if request is None and queued_messages(self) == 0:
            # Between requests: these bytes begin (or continue) the next request's head.
            if data and not self._head_seen:
                self._head_seen = True
                if self._head_since is None:
                    self._head_since = self._loop.time()
            return
        self._head_since, self._head_seen = None, False
        if request is None:
            return
        limit = self._limits.max_body_bytes
        if limit is not None and request.content.total_bytes > limit:
            request.content.set_exception(PayloadTooLarge("the request body is too large"))
        elif parse_error_queued(self, queued):
            # The request in flight has a malformed body (a bad chunk): aiohttp only queues an
            # error for later, so fail the body stream now and the relay ends instead of waiting.
            request.content.set_exception(BadHttpMessage("malformed request body"))

    @property
    def idle(self) -> bool:
        """Nothing in flight and no byte of a next request: safe to close to make room."""
        return (
            self._current_request is None
            and not self._head_seen
            and queued_messages(self) == 0
            and self.transport is not None
        )

    def enforce_deadlines(self, now: float) -> str | None:
        """Cut a head or a body that is late; the kind of refusal, or None."""
        head_since = self._head_since
        late = head_since is not None and now - head_since >= self._limits.header_timeout
        if late and (self.idle or self._head_seen):
            return self._head_timed_out()
        request = self._current_request
        if request is None or not request.body_exists or request.content.is_eof():
            return None
        content = request.content
        if self._body_of is not request or content.total_bytes != self._body_bytes:
            self._body_of, self._body_bytes, self._body_since = request, content.total_bytes, now
        elif (
            now - self._body_since >= self._limits.body_timeout
            and body_starved(content)
            and content.exception() is None
        ):
            content.set_exception(RequestTimeout("the request body stalled"))
            return "body_timeout"
        return None

    def _head_timed_out(self) -> str:
        transport = self.transport
        if transport is not None:
            if self._head_seen:
                transport.write(REQUEST_TIMEOUT_ANSWER)
            transport.close()
        self.force_close()
        self._head_since = None
        return "header_timeout"

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if isinstance(exc, ConnectionError):
            # The client went away mid-answer: nothing can be sent; logged as nginx does (499).
            return client_gone()
        status, reason = _parse_failure(status, exc, self.max_field_size)
        request_id = request_id_from(None)
        bind_request(request_id, ())
        if status >= 500:
            log.error("unhandled error", error=type(exc).__name__ if exc else None)
        return error_response(request.headers, status, reason, request_id, close=True)


def _parse_failure(status: int, exc: BaseException | None, field_limit: int) -> tuple[int, str]:
    """The status and fixed reason for a request aiohttp could not parse or handle."""
    if isinstance(exc, LineTooLong):
        limit = exc.args[1] if len(exc.args) > 1 else None
        if limit == field_limit:
            return 431, "a request header is too large"
        return 414, "the request target is too long"
    if isinstance(exc, BadHttpMessage):
        if too_many_headers(exc):
            return 431, "too many request headers"
        return 400, "the request is malformed"
    if status >= 500:
        return status, "the gateway failed to handle the request"
    return 400, "the request could not be read"


class GatewayServer(web.Server):
    """aiohttp's low-level server with ProtocolHandler for every connection, and the guard that
    admits connections within the caps."""

    def __init__(
        self,
        handler: Callable[[web.BaseRequest], Awaitable[web.StreamResponse]],
        metrics: Metrics,
        guard: ConnectionGuard,
        limits: LimitsConfig,
        **kwargs: Any,
    ) -> None:
        super().__init__(handler, **kwargs)
        self._metrics = metrics
        self._guard = guard
        self._limits = limits

    def __call__(self) -> RequestHandler:
        handler = ProtocolHandler(self, loop=self._loop, **self._kwargs)
        handler.configure(self._limits)
        return handler

    def connection_made(self, handler: RequestHandler, transport: asyncio.Transport) -> None:
        super().connection_made(handler, transport)
        self._metrics.connections.inc()

        def others() -> list[ProtocolHandler]:
            return [c for c in self.handlers() if c is not handler]

        if not self._guard.admit(handler, peer_ip(transport), others):
            handler.force_close()
            transport.close()

    def connection_lost(self, handler: RequestHandler, exc: BaseException | None = None) -> None:
        super().connection_lost(handler, exc)
        self._metrics.connections.dec()
        self._guard.release(handler)

    def handlers(self) -> list[ProtocolHandler]:
        """The open client connections."""
        return [c for c in self.connections if isinstance(c, ProtocolHandler)]


def peer_ip(transport: asyncio.BaseTransport) -> str:
    peer = transport.get_extra_info("peername")
    if not isinstance(peer, tuple) or not peer:
        return ""
    try:
        return clean_ip(str(peer[0]))
    except ValueError:
        return str(peer[0])


def protocol_settings(config: GatewayConfig, metrics: Metrics) -> dict[str, Any]:
    """Parser limits and logging for the client-facing listener."""
    # The parser's own limit is only a memory guard (lines are measured in gateway/request.py):
    # it must never refuse a line the configured limit allows.
    field_limit = config.max_header_bytes * TOTAL_HEADER_FACTOR
    return {
        "max_line_size": MAX_REQUEST_LINE_BYTES,
        "max_field_size": field_limit,
        "max_headers": MAX_HEADER_COUNT,
        "access_log_class": AccessLogger,
        "access_log": AccessLog(metrics.observe_request),
        "keepalive_timeout": config.limits.idle_timeout,
    }
