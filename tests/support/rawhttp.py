"""A raw-socket HTTP/1.1 client: sends exactly the bytes a test writes, parses what comes back.

Client libraries clean requests up (normalize paths, drop odd headers); attacks must arrive as sent.
"""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass

READ_DEADLINE = 10.0


@dataclass
class RawResponse:
    """One parsed response, headers in order and with their original case."""

    status: int
    reason: str
    headers: list[tuple[str, str]]
    body: bytes
    raw_head: bytes

    def header(self, name: str) -> str | None:
        values = self.all(name)
        return values[0] if values else None

    def all(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k.lower() == name.lower()]


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    body = b""
    while True:
        size_line = await reader.readuntil(b"\r\n")
        size = int(size_line.split(b";")[0].strip(), 16)
        if size == 0:
            await reader.readuntil(b"\r\n")
            return body
        body += await reader.readexactly(size)
        await reader.readexactly(2)


async def read_response(reader: asyncio.StreamReader, method: str = "GET") -> RawResponse:
    """Read one response; raises IncompleteReadError if the connection ends first."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    _version, status, *reason = lines[0].split(" ", 2)
    headers = []
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers.append((name, value.strip()))
    response = RawResponse(int(status), reason[0] if reason else "", headers, b"", head)
    code = response.status
    if method == "HEAD" or code in (204, 304) or 100 <= code < 200:
        return response
    if "chunked" in (response.header("Transfer-Encoding") or "").lower():
        response.body = await _read_chunked(reader)
    elif (length := response.header("Content-Length")) is not None:
        response.body = await reader.readexactly(int(length))
    else:
        response.body = await reader.read()
    return response


async def exchange(
    port: int, data: bytes, method: str = "GET", tls: ssl.SSLContext | None = None
) -> RawResponse:
    """Send raw bytes on a new connection (over TLS with `tls`) and read one response."""
    async with asyncio.timeout(READ_DEADLINE):
        hostname = None if tls is None else "localhost"
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=tls, server_hostname=hostname
        )
        try:
            writer.write(data)
            await writer.drain()
            return await read_response(reader, method)
        finally:
            writer.close()


async def exchange_or_close(port: int, data: bytes) -> RawResponse | None:
    """Like exchange, but None when the gateway closes the connection without an answer."""
    try:
        return await exchange(port, data)
    except (asyncio.IncompleteReadError, ConnectionError):
        return None


def get(target: str, *headers: str, host: str = "gateway.test", method: str = "GET") -> bytes:
    """A request with exactly the given target and header lines."""
    lines = [f"{method} {target} HTTP/1.1", f"Host: {host}", *headers, "", ""]
    return "\r\n".join(lines).encode("latin-1")
