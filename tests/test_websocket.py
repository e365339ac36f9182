"""WebSocket upgrades through the gateway: the same auth check, then frames both ways unchanged."""

from __future__ import annotations

import asyncio
import base64
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import pytest
from aiohttp import WSMsgType
from yarl import URL

from tests.support import rawhttp
from tests.support.harness import GOOD, Gw, eventually

DEADLINE = 10.0
PROTECTED_WS = "/dashboard/ws"
PUBLIC_WS = "/ws"


@asynccontextmanager
async def websocket(
    client: aiohttp.ClientSession,
    gw: Gw,
    path: str = PROTECTED_WS,
    *,
    session: str | None = GOOD,
    headers: dict[str, str] | None = None,
    **options: Any,
) -> AsyncIterator[aiohttp.ClientWebSocketResponse]:
    """A client WebSocket through the gateway, with the session cookie unless told otherwise.

    The URL is sent as written: the client library does not requote or normalize it.
    """
    sent = dict(headers or {})
    if session is not None:
        sent["Cookie"] = f"session={session}"
    async with (
        asyncio.timeout(DEADLINE),
        client.ws_connect(URL(gw.url + path, encoded=True), headers=sent, **options) as ws,
    ):
        yield ws


async def greeting(ws: aiohttp.ClientWebSocketResponse) -> str:
    message = await ws.receive()
    assert message.type is WSMsgType.TEXT, message
    text: str = message.data
    assert text.startswith("hello ")
    return text


def upgrade_request(path: str, *headers: str) -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    return rawhttp.get(
        path,
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {key}",
        "Sec-WebSocket-Version: 13",
        *headers,
    )


# ---------------------------------------------------------------------------------------------
# The auth check comes first


# A refusal is 302 (to sign in) or 401; a script asking for JSON always gets 401.
DENIED = {
    "no-session-browser": ((), "text/html", {302, 401}),
    "no-session-script": ((), "application/json", {401}),
    "no-accept": ((), None, {302, 401}),
    "invalid-session-browser": (
        ("Cookie: session=not-a-valid-token-000",),
        "text/html",
        {302, 401},
    ),
    "invalid-session-script": (
        ("Cookie: session=not-a-valid-token-000",),
        "application/json",
        {401},
    ),
    "other-cookie-only": (("Cookie: theme=dark",), "application/json", {401}),
}


@pytest.mark.parametrize(("extra", "accept", "statuses"), DENIED.values(), ids=DENIED.keys())
async def test_protected_upgrade_without_valid_session_refused(
    gw: Gw, extra: tuple[str, ...], accept: str | None, statuses: set[int]
) -> None:
    """An upgrade to a protected path without a valid session gets 302/401 and no upgrade."""
    headers = (*extra, *([f"Accept: {accept}"] if accept else []))
    response = await rawhttp.exchange(gw.port, upgrade_request(PROTECTED_WS, *headers))
    assert response.status in statuses
    assert response.header("Upgrade") is None
    assert response.header("Sec-WebSocket-Accept") is None
    if response.status == 302:
        assert (response.header("Location") or "").startswith("/login")
    assert gw.seen.seen == []


@pytest.mark.parametrize(
    ("path", "status"),
    [("/ws-refused", 403), ("/not-a-websocket", 502)],
    ids=["app-refuses", "app-answers-200"],
)
async def test_upgrade_the_app_refuses_is_the_gateways_own_answer(
    gw: Gw, path: str, status: int
) -> None:
    """An upgrade the app refuses gets the gateway's own answer: request id, no-store, no Server."""
    response = await rawhttp.exchange(gw.port, upgrade_request(path, "X-Request-ID: ws-refused-1"))
    assert response.status == status
    assert response.header("X-Request-ID") == "ws-refused-1"
    assert response.header("Cache-Control") == "no-store"
    assert response.header("Server") is None
    assert response.header("Sec-WebSocket-Accept") is None


@pytest.mark.parametrize("path", [PROTECTED_WS, "/dashboard//ws", "/x/../dashboard/ws"])
async def test_client_library_upgrade_refused(
    gw: Gw, client: aiohttp.ClientSession, path: str
) -> None:
    """A WebSocket client without a session is refused on any spelling of a protected path."""
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        async with websocket(client, gw, path, session=None):
            pass
    assert refused.value.status in (302, 401)
    assert gw.seen.seen == []


async def test_protected_upgrade_with_session_reaches_frontend_with_identity(
    gw: Gw, client: aiohttp.ClientSession
) -> None:
    """With a valid session the upgrade succeeds and the frontend sees the user id."""
    async with websocket(client, gw) as ws:
        assert await greeting(ws) == "hello u-42"
    [entry] = gw.seen.seen
    assert entry["raw_path"] == PROTECTED_WS
    assert ["X-Auth-User-Id", "u-42"] in entry["headers"]


async def test_spoofed_identity_header_replaced(gw: Gw, client: aiohttp.ClientSession) -> None:
    """A client's own identity header never reaches the frontend; the validated one does."""
    spoof = {"X-Auth-User-Id": "admin"}
    async with websocket(client, gw, headers=spoof) as ws:
        assert await greeting(ws) == "hello u-42"
    async with websocket(client, gw, PUBLIC_WS, session=None, headers=spoof) as ws:
        assert await greeting(ws) == "hello anonymous"


async def test_public_websocket_without_session(gw: Gw, client: aiohttp.ClientSession) -> None:
    """A WebSocket on a public path works without a session."""
    async with websocket(client, gw, PUBLIC_WS, session=None) as ws:
        assert await greeting(ws) == "hello anonymous"
        await ws.send_str("ping-pong")
        reply = await ws.receive()
        assert (reply.type, reply.data) == (WSMsgType.TEXT, "echo:ping-pong")
    assert gw.api.calls == []


async def test_upgrade_query_forwarded(gw: Gw, client: aiohttp.ClientSession) -> None:
    """The upgrade request's raw query reaches the frontend byte for byte."""
    async with websocket(client, gw, PUBLIC_WS + "?room=a%2Fb&x=%zz&flag", session=None) as ws:
        await greeting(ws)
    assert [e["raw_path"] for e in gw.seen.seen] == ["/ws?room=a%2Fb&x=%zz&flag"]


async def test_raw_upgrade_handshake(gw: Gw) -> None:
    """A raw upgrade gets 101 with Upgrade: websocket and the first frame is the greeting."""
    async with asyncio.timeout(DEADLINE):
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
        try:
            writer.write(upgrade_request(PROTECTED_WS, f"Cookie: session={GOOD}"))
            await writer.drain()
            head = await rawhttp.read_response(reader)
            assert head.status == 101
            assert (head.header("Upgrade") or "").lower() == "websocket"
            assert head.header("Sec-WebSocket-Accept")
            frame = await reader.readexactly(2)
            assert frame[0] == 0x81  # FIN + text
            payload = await reader.readexactly(frame[1] & 0x7F)
            assert payload == b"hello u-42"
        finally:
            writer.close()


# ---------------------------------------------------------------------------------------------
# Frames both ways


TEXTS = {
    "plain": "hello there",
    "empty": "",
    "unicode": "ünïcödé ✓ 👋",
    "large-200k": "x" * 200_000,
    "looks-like-close-later": "closing: not a command",
}
BINARIES = {
    "small": b"\x00\x01\xfe\xff",
    "empty": b"",
    "not-utf8": b"\xc3\x28\xa0\xa1",
    "random-1mib": os.urandom(1024 * 1024),
}


@pytest.mark.parametrize("text", TEXTS.values(), ids=TEXTS.keys())
async def test_text_echo(gw: Gw, client: aiohttp.ClientSession, text: str) -> None:
    """A text frame reaches the frontend and its echo comes back unchanged."""
    async with websocket(client, gw) as ws:
        await greeting(ws)
        await ws.send_str(text)
        reply = await ws.receive()
    assert (reply.type, reply.data) == (WSMsgType.TEXT, "echo:" + text)


@pytest.mark.parametrize("data", BINARIES.values(), ids=BINARIES.keys())
async def test_binary_echo(gw: Gw, client: aiohttp.ClientSession, data: bytes) -> None:
    """A binary frame reaches the frontend and comes back byte for byte, still binary."""
    async with websocket(client, gw) as ws:
        await greeting(ws)
        await ws.send_bytes(data)
        reply = await ws.receive()
    assert reply.type is WSMsgType.BINARY
    assert reply.data == data


async def test_many_frames_keep_order(gw: Gw, client: aiohttp.ClientSession) -> None:
    """Many frames sent back to back come back all, in order, text and binary interleaved."""
    async with websocket(client, gw) as ws:
        await greeting(ws)
        for n in range(200):
            if n % 2:
                await ws.send_bytes(n.to_bytes(2, "big"))
            else:
                await ws.send_str(f"m{n}")
        replies = [await ws.receive() for _ in range(200)]
    for n, reply in enumerate(replies):
        if n % 2:
            assert (reply.type, reply.data) == (WSMsgType.BINARY, n.to_bytes(2, "big"))
        else:
            assert (reply.type, reply.data) == (WSMsgType.TEXT, f"echo:m{n}")


async def test_ping_answered_by_pong(gw: Gw, client: aiohttp.ClientSession) -> None:
    """A ping from the client is answered by a pong with the same payload."""
    async with websocket(client, gw, autoping=False) as ws:
        await greeting(ws)
        for payload in (b"are-you-there", b""):
            await ws.ping(payload)
            reply = await ws.receive()
            assert (reply.type, reply.data) == (WSMsgType.PONG, payload)
        # The connection still carries data after the pings.
        await ws.send_str("after")
        reply = await ws.receive()
        assert reply.data == "echo:after"


# ---------------------------------------------------------------------------------------------
# Subprotocols


PROTOCOLS = {
    "superchat": (["superchat"], "superchat"),
    "chat": (["chat"], "chat"),
    "unknown-then-superchat": (["v9.unknown", "superchat"], "superchat"),
    "client-order-first": (["superchat", "chat"], "superchat"),
    "unknown-only": (["v9.unknown"], None),
    "none-asked": ([], None),
}


@pytest.mark.parametrize(("asked", "chosen"), PROTOCOLS.values(), ids=PROTOCOLS.keys())
async def test_subprotocol_negotiated(
    gw: Gw, client: aiohttp.ClientSession, asked: list[str], chosen: str | None
) -> None:
    """The subprotocol the frontend picks from the client's list is the one the client gets."""
    async with websocket(client, gw, protocols=asked) as ws:
        assert ws.protocol == chosen
        assert await greeting(ws) == "hello u-42"


# ---------------------------------------------------------------------------------------------
# Close codes both ways


@pytest.mark.parametrize("code", [4001, 1000, 1008, 3000, 4999])
async def test_close_code_from_frontend_reaches_client(
    gw: Gw, client: aiohttp.ClientSession, code: int
) -> None:
    """The frontend's close code reaches the client unchanged."""
    async with websocket(client, gw) as ws:
        await greeting(ws)
        await ws.send_str(f"close:{code}")
        message = await ws.receive()
        assert message.type is WSMsgType.CLOSE
        assert message.data == code
        assert ws.close_code == code


async def test_frontend_close_handshake_gets_client_reply(
    gw: Gw, client: aiohttp.ClientSession
) -> None:
    """The client's reply to the frontend's close (echoing 4001) is what completes it upstream."""
    async with websocket(client, gw, autoclose=False) as ws:
        await greeting(ws)
        await ws.send_str("close:4001")
        message = await ws.receive()
        assert (message.type, message.data) == (WSMsgType.CLOSE, 4001)
        await ws.close(code=4001)
    await eventually(lambda: bool(gw.seen.websocket_closed))
    assert gw.seen.websocket_closed == [4001]


@pytest.mark.parametrize("code", [4002, 1000, 1001, 3001, 4999])
async def test_close_code_from_client_reaches_frontend(
    gw: Gw, client: aiohttp.ClientSession, code: int
) -> None:
    """The client's close code reaches the frontend unchanged."""
    async with websocket(client, gw) as ws:
        await greeting(ws)
        await ws.send_str("before close")
        assert (await ws.receive()).data == "echo:before close"
        await ws.close(code=code)
    await eventually(lambda: gw.seen.websocket_closed == [code])


async def test_public_close_from_client(gw: Gw, client: aiohttp.ClientSession) -> None:
    """On a public path too, the client's close code reaches the frontend."""
    async with websocket(client, gw, PUBLIC_WS, session=None) as ws:
        await greeting(ws)
        await ws.close(code=4002)
    await eventually(lambda: gw.seen.websocket_closed == [4002])


async def test_gateway_serves_http_after_websockets(gw: Gw, client: aiohttp.ClientSession) -> None:
    """After WebSockets open and close, plain requests still pass."""
    for code in (4001, 4002):
        async with websocket(client, gw) as ws:
            await greeting(ws)
            if code == 4001:
                await ws.send_str("close:4001")
                await ws.receive()
            else:
                await ws.close(code=code)
    async with asyncio.timeout(DEADLINE), client.get(gw.url + "/after") as response:
        assert response.status == 200
        assert (await response.json())["raw_path"] == "/after"
    await eventually(lambda: len(gw.seen.websocket_closed) == 2)
    assert gw.seen.websocket_closed[1] == 4002
