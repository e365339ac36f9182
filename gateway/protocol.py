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

from gateway.aiohttp_internals import parse_error_queued, queued_messages, too_many_headers
from gateway.config import GatewayConfig
from gateway.forwarded import request_id_from
from gateway.logs import AccessLog, AccessLogger, bind_request
from gateway.metrics import Metrics
from gateway.request import TOTAL_HEADER_FACTOR
from gateway.responses import client_gone, error_response
from gateway.routing import KEEPALIVE_SECONDS

log = structlog.get_logger("gateway.protocol")

# The request line (method, target, version) may be this long; longer gets 414.
MAX_REQUEST_LINE_BYTES = 16384
MAX_HEADER_COUNT = 128
LISTEN_BACKLOG = 1024


class ProtocolHandler(RequestHandler):
    """aiohttp's connection handler with parse errors answered by status, never by exception text.

    aiohttp answers an oversized header with 400 and quotes the offending line (a cookie) in the
    body and its log; here it is 431 (414 for the request line) with a fixed reason, quoting
    nothing.
    """

    def data_received(self, data: bytes) -> None:
        queued = queued_messages(self)
        super().data_received(data)
        request = self._current_request
        if request is None or not parse_error_queued(self, queued):
            return
        # The request in flight has a malformed body (a bad chunk): aiohttp only queues an error
        # for later, so fail the body stream now and the relay ends instead of waiting on it.
        request.content.set_exception(BadHttpMessage("malformed request body"))

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
    """aiohttp's low-level server with ProtocolHandler for every connection."""

    def __init__(
        self,
        handler: Callable[[web.BaseRequest], Awaitable[web.StreamResponse]],
        metrics: Metrics,
        **kwargs: Any,
    ) -> None:
        super().__init__(handler, **kwargs)
        self._metrics = metrics

    def __call__(self) -> RequestHandler:
        return ProtocolHandler(self, loop=self._loop, **self._kwargs)

    def connection_made(self, handler: RequestHandler, transport: asyncio.Transport) -> None:
        super().connection_made(handler, transport)
        self._metrics.connections.inc()

    def connection_lost(self, handler: RequestHandler, exc: BaseException | None = None) -> None:
        super().connection_lost(handler, exc)
        self._metrics.connections.dec()


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
        "keepalive_timeout": KEEPALIVE_SECONDS,
    }
