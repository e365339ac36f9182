"""Every use of aiohttp's private internals, in one place.

aiohttp's public API has no way to (1) see that a malformed chunk was queued while the body is
being relayed, (2) send a response's head and body in one write, (3) leave out the headers it adds
on its own (Server, Content-Type), (4) tell "too many headers" from other parse errors, (5) see
whether a request body's buffer is empty, or (6) add a header to every answer a low-level server
sends, its parse-error answers included. The gateway needs all six; each is reached here only,
and tests/test_aiohttp_internals.py fails loudly when an aiohttp upgrade changes one of them
(aiohttp is pinned to 3.14.x for this and for gateway/upstream.py).
"""

from __future__ import annotations

import asyncio

from aiohttp import web
from aiohttp.abc import AbstractStreamWriter
from aiohttp.http_exceptions import BadHttpMessage
from aiohttp.http_parser import RawRequestMessage
from aiohttp.streams import StreamReader
from aiohttp.web_protocol import RequestHandler, _ErrInfo, _RequestFactory

# aiohttp's parser error text for a request with more headers than max_headers.
TOO_MANY_HEADERS_TEXT = "Too many headers"


def queued_messages(handler: RequestHandler) -> int:
    """How many parsed messages (requests or parse errors) wait on this connection."""
    return len(handler._messages)


def parse_error_queued(handler: RequestHandler, since: int) -> bool:
    """Whether a parse error was queued after the first `since` messages: aiohttp only queues
    it for the next request, while the current one still waits on its body."""
    return any(isinstance(message, _ErrInfo) for message, _ in list(handler._messages)[since:])


def body_starved(content: StreamReader) -> bool:
    """Nothing of the body is buffered: whoever reads it is waiting on the client, so a body that
    does not grow is the client's stall, not flow control holding it back."""
    return content._size == 0


def too_many_headers(exc: BadHttpMessage) -> bool:
    """aiohttp raises a plain BadHttpMessage for it, told apart only by its text."""
    return TOO_MANY_HEADERS_TEXT in str(exc)


def head_with_body(response: web.StreamResponse) -> None:
    """Hold the head back until the first body write, so both leave in one syscall."""
    response._send_headers_immediately = False


class OmitsDefaultHeaders(web.StreamResponse):
    """A response that sends none of the `OMITTED` headers aiohttp adds when they are missing
    (Server with its version, a guessed Content-Type) unless they were set before prepare()."""

    OMITTED: tuple[str, ...] = ("Server", "Content-Type")

    async def _prepare_headers(self) -> None:
        headers = self.headers
        missing = [name for name in self.OMITTED if name not in headers]
        await super()._prepare_headers()
        for name in missing:
            self._headers.popall(name, None)


def every_answer_has(server: web.Server, name: str, value: str) -> _RequestFactory:
    """A request factory for `server` whose every answer carries `name: value` unless the
    handler set that header itself. aiohttp calls a request's _prepare_hook from prepare(), for
    relayed, own, WebSocket and parse-error answers alike, just before the head is written."""
    loop = server._loop

    class Request(web.BaseRequest):
        async def _prepare_hook(self, response: web.StreamResponse) -> None:
            response.headers.setdefault(name, value)

    def make(
        message: RawRequestMessage,
        payload: StreamReader,
        protocol: RequestHandler,
        writer: AbstractStreamWriter,
        task: asyncio.Task[None],
    ) -> web.BaseRequest:
        return Request(message, payload, protocol, writer, task, loop)

    return make
