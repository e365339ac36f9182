"""The private aiohttp internals the gateway relies on (gateway/aiohttp_internals.py) are still
there and behave as assumed: these tests fail loudly on an aiohttp upgrade that changes them."""

from __future__ import annotations

import asyncio
import inspect

from aiohttp import web
from aiohttp.base_protocol import BaseProtocol
from aiohttp.http_exceptions import BadHttpMessage
from aiohttp.http_parser import HttpRequestParser
from aiohttp.web_protocol import RequestHandler, _ErrInfo

from gateway import aiohttp_internals
from tests.support import rawhttp
from tests.support.harness import Gw


def test_request_handler_queues_messages_in_a_slot() -> None:
    """RequestHandler keeps parsed requests and parse errors in its `_messages` slot."""
    assert "_messages" in RequestHandler.__slots__


def test_parse_errors_are_queued_as_errinfo() -> None:
    """A parse error is queued as an _ErrInfo carrying status, exception and message."""
    error = _ErrInfo(status=400, exc=BadHttpMessage("x"), message="x")
    assert (error.status, error.message) == (400, "x")


async def test_too_many_headers_is_told_by_its_text() -> None:
    """The parser's error for too many headers carries the text the gateway looks for."""
    loop = asyncio.get_running_loop()
    parser = HttpRequestParser(BaseProtocol(loop), loop, 2**16, max_headers=3)
    head = b"GET / HTTP/1.1\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(10)) + b"\r\n"
    try:
        parser.feed_data(head)
    except BadHttpMessage as exc:
        assert aiohttp_internals.too_many_headers(exc)
    else:
        raise AssertionError("the parser accepted more headers than max_headers")


def test_response_head_can_wait_for_the_body() -> None:
    """StreamResponse has the flag that holds its head back until the first body write."""
    response = web.StreamResponse()
    assert response._send_headers_immediately is True
    aiohttp_internals.head_with_body(response)
    assert response._send_headers_immediately is False


def test_default_headers_are_added_in_prepare_headers() -> None:
    """aiohttp adds its default headers in the coroutine `_prepare_headers`, into `_headers`."""
    assert inspect.iscoroutinefunction(web.StreamResponse._prepare_headers)
    assert web.StreamResponse()._headers is not None


async def test_own_answers_carry_no_server_header(gw: Gw) -> None:
    """The gateway's own answer does not get the Server header aiohttp adds by default."""
    own = await rawhttp.exchange(gw.port, rawhttp.get("/%00"))
    assert own.status == 400
    assert own.header("Server") is None


async def test_malformed_chunk_mid_upload_fails_the_body_at_once(gw: Gw) -> None:
    """A bad chunk while the body is relayed is answered 400 now, not after a timeout."""
    data = (
        b"POST /public-page HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\nZZ\r\n"
    )
    response = await asyncio.wait_for(rawhttp.exchange(gw.port, data), 5)
    assert response.status == 400
