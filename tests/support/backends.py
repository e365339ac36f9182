"""Real servers the gateway is tested against: a frontend, an auth API, and a raw-bytes upstream.

All listen on loopback ports picked by the kernel; tests reach them only through real sockets.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web

from tests.support.permissive_resolver import resolve

PROTECTED_MARKER = "PROTECTED-CONTENT"
PROTECTED_ROUTES = ("/dashboard", "/settings", "/profile", "/admin")
GOOD_USER = {"id": "u-42", "email": "ada@example.com", "name": "Ada", "roles": ["user"]}


def is_protected(resolved: str) -> bool:
    """Whether the frontend serves protected content at a path it resolved."""
    return any(resolved == p or resolved.startswith(p + "/") for p in PROTECTED_ROUTES)


@dataclass
class FrontendSeen:
    """What the frontend saw: every request's method, raw target and headers."""

    seen: list[dict[str, Any]] = field(default_factory=list)
    websocket_closed: list[int | None] = field(default_factory=list)


def build_frontend(state: FrontendSeen) -> web.Application:
    """A frontend that resolves paths like a permissive framework and reports what it received."""

    def record(request: web.Request) -> dict[str, Any]:
        entry = {
            "method": request.method,
            "raw_path": request.raw_path,
            "headers": [[k, v] for k, v in request.headers.items()],
            "resolved": resolve(request.raw_path.split("?", 1)[0]),
        }
        state.seen.append(entry)
        return entry

    async def echo(request: web.Request) -> web.StreamResponse:
        entry = record(request)
        digest = hashlib.sha256()
        size = 0
        async for chunk in request.content.iter_any():
            digest.update(chunk)
            size += len(chunk)
        entry["body_sha256"] = digest.hexdigest()
        entry["body_length"] = size
        if is_protected(entry["resolved"]):
            entry["marker"] = PROTECTED_MARKER
        return web.json_response(entry)

    async def download(request: web.Request) -> web.StreamResponse:
        record(request)
        size = int(request.query.get("size", "1048576"))
        chunked = request.query.get("chunked") == "1"
        response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
        if chunked:
            response.enable_chunked_encoding()
        else:
            response.content_length = size
        await response.prepare(request)
        block = bytes(range(256)) * 256
        sent = 0
        while sent < size:
            piece = block[: min(len(block), size - sent)]
            await response.write(piece)
            sent += len(piece)
        await response.write_eof()
        return response

    async def events(request: web.Request) -> web.StreamResponse:
        record(request)
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        count = int(request.query.get("count", "3"))
        gap = float(request.query.get("gap", "0.3"))
        for n in range(count):
            await response.write(f"data: tick {n}\n\n".encode())
            await asyncio.sleep(gap)
        await response.write_eof()
        return response

    async def gzipped(request: web.Request) -> web.StreamResponse:
        record(request)
        body = gzip.compress(b"hello gzip " * 100)
        return web.Response(
            body=body, headers={"Content-Encoding": "gzip", "Content-Type": "text/plain"}
        )

    async def cookies(request: web.Request) -> web.StreamResponse:
        record(request)
        response = web.Response(text="cookies")
        response.headers.add("Set-Cookie", "a=1; Path=/")
        response.headers.add("Set-Cookie", "b=2; Path=/; HttpOnly")
        response.headers.add("X-Custom", "one")
        response.headers.add("X-Custom", "two")
        return response

    async def slow(request: web.Request) -> web.StreamResponse:
        record(request)
        await asyncio.sleep(float(request.query.get("delay", "5")))
        return web.Response(text="slow")

    async def redirect(request: web.Request) -> web.StreamResponse:
        record(request)
        return web.Response(status=302, headers={"Location": "/elsewhere"})

    async def cut(request: web.Request) -> web.StreamResponse:
        record(request)
        response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
        response.content_length = 100_000
        await response.prepare(request)
        await response.write(b"x" * 1000)
        await asyncio.sleep(0.05)
        assert request.transport is not None
        request.transport.abort()
        return response

    async def websocket(request: web.Request) -> web.StreamResponse:
        record(request)
        ws = web.WebSocketResponse(protocols=("chat", "superchat"))
        await ws.prepare(request)
        await ws.send_str(f"hello {request.headers.get('X-Auth-User-Id', 'anonymous')}")
        async for message in ws:
            if message.type is WSMsgType.TEXT:
                if message.data.startswith("close:"):
                    await ws.close(code=int(message.data[6:]), message=b"bye")
                    break
                await ws.send_str("echo:" + message.data)
            elif message.type is WSMsgType.BINARY:
                await ws.send_bytes(message.data)
        state.websocket_closed.append(ws.close_code)
        return ws

    async def refuse_upgrade(request: web.Request) -> web.StreamResponse:
        record(request)
        return web.Response(status=403, text="no websocket for you")

    app = web.Application()
    app.router.add_get("/ws-refused", refuse_upgrade)
    app.router.add_get("/download", download)
    app.router.add_get("/events", events)
    app.router.add_get("/gzip", gzipped)
    app.router.add_get("/cookies", cookies)
    app.router.add_get("/slow", slow)
    app.router.add_get("/redirect", redirect)
    app.router.add_get("/cut", cut)
    app.router.add_get("/ws", websocket)
    app.router.add_get("/dashboard/ws", websocket)
    app.router.add_route("*", "/{tail:.*}", echo)
    return app


@dataclass
class AuthApi:
    """The auth API's sessions and a record of every validation call it received."""

    sessions: dict[str, Any] = field(default_factory=dict)
    calls: list[dict[str, Any]] = field(default_factory=list)
    delay: float = 0.0
    inflight: int = 0
    max_inflight: int = 0
    # An outage or a revocation for every cookie: each call is answered (status, body as text).
    answer: tuple[int, str] | None = None
    # While set and not yet released, every call waits for it (a slow API the test controls).
    gate: asyncio.Event | None = None


# Tokens that make the test auth API misbehave in a named way.
BEHAVIOURS: dict[str, Callable[[web.Request], Awaitable[web.StreamResponse]]] = {}


def behaviour(
    token: str,
) -> Callable[
    [Callable[[web.Request], Awaitable[web.StreamResponse]]],
    Callable[[web.Request], Awaitable[web.StreamResponse]],
]:
    def register(
        handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
    ) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        BEHAVIOURS[token] = handler
        return handler

    return register


@behaviour("api-302")
async def _redirect(request: web.Request) -> web.StreamResponse:
    return web.Response(status=302, headers={"Location": "/api/auth/ok"})


@behaviour("api-500")
async def _server_error(request: web.Request) -> web.StreamResponse:
    return web.Response(status=500, text="boom")


@behaviour("api-404")
async def _not_found(request: web.Request) -> web.StreamResponse:
    return web.Response(status=404, text="no")


@behaviour("api-403")
async def _forbidden(request: web.Request) -> web.StreamResponse:
    return web.json_response({"error": "forbidden"}, status=403)


@behaviour("api-nonjson")
async def _not_json(request: web.Request) -> web.StreamResponse:
    return web.Response(text="<html>ok</html>", content_type="text/html")


@behaviour("api-empty-body")
async def _empty_body(request: web.Request) -> web.StreamResponse:
    return web.Response(status=200)


@behaviour("api-array")
async def _array(request: web.Request) -> web.StreamResponse:
    return web.json_response([GOOD_USER])


@behaviour("api-empty-object")
async def _empty_object(request: web.Request) -> web.StreamResponse:
    return web.json_response({})


@behaviour("api-crlf")
async def _crlf(request: web.Request) -> web.StreamResponse:
    return web.json_response({"id": "u-1\r\nX-Injected: yes", "email": "a@b.c"})


@behaviour("api-lf")
async def _lf(request: web.Request) -> web.StreamResponse:
    return web.json_response({"id": "u-1", "email": "a@b.c\nX-Injected: yes"})


@behaviour("api-nul")
async def _nul(request: web.Request) -> web.StreamResponse:
    return web.json_response({"id": "u-1\x00", "email": "a@b.c"})


@behaviour("api-slow")
async def _slow(request: web.Request) -> web.StreamResponse:
    await asyncio.sleep(30)
    return web.json_response(GOOD_USER)


@behaviour("api-reset")
async def _reset(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "application/json"})
    response.content_length = 500
    await response.prepare(request)
    await response.write(b'{"id": "u-1", "em')
    await asyncio.sleep(0.05)
    assert request.transport is not None
    request.transport.abort()
    return response


@behaviour("renew-token")
async def _renew(request: web.Request) -> web.StreamResponse:
    response = web.json_response(GOOD_USER)
    response.headers.add("Set-Cookie", "session=renewed-token; Path=/; HttpOnly; Max-Age=3600")
    return response


@behaviour("expired-token")
async def _expired(request: web.Request) -> web.StreamResponse:
    response = web.json_response({"error": "expired"}, status=401)
    response.headers.add("Set-Cookie", "session=; Path=/; Max-Age=0")
    return response


@behaviour("api-scalars")
async def _scalars(request: web.Request) -> web.StreamResponse:
    return web.json_response(
        {"id": 7, "email": True, "nested": {"org": "hamrah"}, "list": [1], "obj": {"a": 1}}
    )


def build_auth_api(state: AuthApi) -> web.Application:
    """An auth API: registered tokens are valid, named tokens misbehave, others get 401."""

    async def validate(request: web.Request) -> web.StreamResponse:
        state.calls.append({"headers": [[k, v] for k, v in request.headers.items()]})
        state.inflight += 1
        state.max_inflight = max(state.max_inflight, state.inflight)
        try:
            if state.delay:
                await asyncio.sleep(state.delay)
            if state.gate is not None:
                await state.gate.wait()
            if state.answer is not None:
                return web.Response(status=state.answer[0], text=state.answer[1])
            token = request.cookies.get("session", "")
            if token in BEHAVIOURS:
                return await BEHAVIOURS[token](request)
            if token in state.sessions:
                return web.json_response(state.sessions[token])
            return web.json_response({"error": "invalid session"}, status=401)
        finally:
            state.inflight -= 1

    app = web.Application()
    app.router.add_get("/api/auth/sessions/validate", validate)
    return app


@dataclass
class RawUpstream:
    """An upstream that answers every request with fixed bytes, to send what aiohttp would not."""

    response: bytes = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    close_after: bool = True
    received: list[bytes] = field(default_factory=list)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            self.received.append(head)
            writer.write(self.response)
            await writer.drain()
            if self.close_after:
                writer.close()
            else:
                await reader.read()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()
