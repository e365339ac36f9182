"""Attack class: a frontend whose answers could be read two ways, or a connection that dies.

A proxy that reads one extra answer off a kept connection hands it to the next client (response
queue poisoning); one that resends a request after a connection died may run a POST twice. Each
case drives the gateway over real sockets in front of a scripted frontend that writes raw bytes.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import pytest

from tests.support import rawhttp
from tests.support.harness import GatewayFactory

# What the frontend sends for the n-th request it reads (counting from 0 over all connections):
# bytes to write, or None to close the connection without answering.
Script = Callable[[int], bytes | None]


def answer(body: bytes, *headers: str) -> bytes:
    head = "".join(f"{h}\r\n" for h in headers)
    return f"HTTP/1.1 200 OK\r\n{head}Content-Length: {len(body)}\r\n\r\n".encode() + body


FRESH = answer(b"fresh")


@dataclass
class ScriptedFrontend:
    """Reads requests one after another on each connection and answers from the script."""

    script: Script = lambda n: FRESH
    requests: list[tuple[int, bytes]] = field(default_factory=list)
    connections: int = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        connection = self.connections
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                for line in head.split(b"\r\n"):
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        await reader.readexactly(int(value))
                reply = self.script(len(self.requests))
                self.requests.append((connection, head))
                if reply is None:
                    return
                writer.write(reply)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    def methods(self) -> list[str]:
        return [head.split(b" ", 1)[0].decode() for _, head in self.requests]


@pytest.fixture
async def scripted() -> AsyncIterator[tuple[ScriptedFrontend, str]]:
    frontend = ScriptedFrontend()
    server = await asyncio.start_server(frontend.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    yield frontend, f"http://127.0.0.1:{port}"
    server.close()
    await server.wait_closed()


def first_then_fresh(first: bytes) -> Script:
    return lambda n: first if n == 0 else FRESH


# The first answer (to the method given) carries bytes beyond itself; none may reach anyone.
SMUGGLED_ANSWERS: dict[str, tuple[str, bytes]] = {
    "second-answer-queued": ("GET", answer(b"hi") + answer(b"POISON")),
    "body-longer-than-length": ("GET", b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhiPOISON"),
    "answer-after-chunked-end": (
        "GET",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n"
        + answer(b"POISON"),
    ),
    "head-answer-with-a-body": ("HEAD", answer(b"POISON")),
}


@pytest.mark.parametrize(
    ("method", "first"), SMUGGLED_ANSWERS.values(), ids=SMUGGLED_ANSWERS.keys()
)
async def test_extra_bytes_from_the_frontend_never_reach_the_next_client(
    gateway_factory: GatewayFactory,
    scripted: tuple[ScriptedFrontend, str],
    method: str,
    first: bytes,
) -> None:
    """Bytes after an answer end its connection: the next client gets its own fresh answer."""
    frontend, url = scripted
    frontend.script = first_then_fresh(first)
    gw = await gateway_factory(upstream=url)
    await rawhttp.exchange(gw.port, rawhttp.get("/public", method=method), method=method)
    for _ in range(3):
        second = await rawhttp.exchange(gw.port, rawhttp.get("/public"))
        assert (second.status, second.body) == (200, b"fresh")
    assert frontend.connections >= 2


# Answers that are not one clear HTTP/1.x answer to the request sent: 502, then normal service.
UNREADABLE_ANSWERS: dict[str, bytes] = {
    "unasked-101": b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
    b"Connection: Upgrade\r\n\r\n",
    "length-and-chunked": b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n",
    "two-different-lengths": b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 6\r\n\r\n"
    b"hiPOIS",
    "not-http": b"SSH-2.0-OpenSSH_9.6\r\n\r\n",
    "http-2-status-line": b"HTTP/2 200\r\nContent-Length: 2\r\n\r\nhi",
    "space-before-colon": b"HTTP/1.1 200 OK\r\nContent-Length : 6\r\n\r\nPOISON",
    "space-in-name": b"HTTP/1.1 200 OK\r\nX Poison: 1\r\nContent-Length: 2\r\n\r\nhi",
    "nul-in-value": b"HTTP/1.1 200 OK\r\nX-A: a\x00b\r\nContent-Length: 2\r\n\r\nhi",
    "bare-cr-in-value": b"HTTP/1.1 200 OK\r\nX-A: a\rSet-Cookie: x=1\r\n"
    b"Content-Length: 2\r\n\r\nhi",
}


@pytest.mark.parametrize("first", UNREADABLE_ANSWERS.values(), ids=UNREADABLE_ANSWERS.keys())
async def test_unreadable_answer_is_502_and_the_next_request_is_served(
    gateway_factory: GatewayFactory, scripted: tuple[ScriptedFrontend, str], first: bytes
) -> None:
    """An answer the gateway cannot read one way only is 502; nothing of it reaches a client."""
    frontend, url = scripted
    frontend.script = first_then_fresh(first)
    gw = await gateway_factory(upstream=url)
    refused = await rawhttp.exchange(gw.port, rawhttp.get("/public"))
    assert refused.status == 502
    assert b"POISON" not in refused.body
    second = await rawhttp.exchange(gw.port, rawhttp.get("/public"))
    assert (second.status, second.body) == (200, b"fresh")


def close_second(n: int) -> bytes | None:
    """Answer the first request; take the second and close without answering."""
    return None if n == 1 else answer(b"")


# (method, body, expected status, times the frontend sees the request)
KEEPALIVE_RACES: dict[str, tuple[str, bytes | None, int, int]] = {
    "get-is-sent-again": ("GET", None, 200, 2),
    "head-is-sent-again": ("HEAD", None, 200, 2),
    "delete-is-sent-again": ("DELETE", None, 200, 2),
    "post-without-body-is-not": ("POST", None, 502, 1),
    "patch-without-body-is-not": ("PATCH", None, 502, 1),
    "post-with-body-is-not": ("POST", b"order=42", 502, 1),
    "put-with-body-is-not": ("PUT", b"x", 502, 1),
}


@pytest.mark.parametrize(
    ("method", "body", "status", "times"), KEEPALIVE_RACES.values(), ids=KEEPALIVE_RACES.keys()
)
async def test_kept_connection_closed_before_the_answer(
    gateway_factory: GatewayFactory,
    scripted: tuple[ScriptedFrontend, str],
    method: str,
    body: bytes | None,
    status: int,
    times: int,
) -> None:
    """Only an idempotent request without a body is sent again; nothing else can run twice."""
    frontend, url = scripted
    frontend.script = close_second
    gw = await gateway_factory(upstream=url)
    warm = await rawhttp.exchange(gw.port, rawhttp.get("/public"))
    assert warm.status == 200
    length = len(body or b"")
    data = rawhttp.get("/public", f"Content-Length: {length}", method=method) + (body or b"")
    response = await rawhttp.exchange(gw.port, data, method=method)
    assert response.status == status
    assert frontend.methods()[1:] == [method] * times
