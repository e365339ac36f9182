"""Stage 1 of the request path: the request read into one value, or why it cannot be read.

Everything later stages need is read here once, before anything is decided: the request id and
the client's address (so even the earliest refusal carries them), the normalized path, the query,
the session cookie from one scan of the Cookie headers, the values no log line may show, and
whether it is a WebSocket handshake. The stage takes plain values, not aiohttp's request object.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from aiohttp import HttpVersion, HttpVersion10, HttpVersion11
from multidict import CIMultiDictProxy

from gateway.cookies import scan_cookies
from gateway.errors import (
    BadRequest,
    GatewayError,
    HeadersTooLarge,
    PayloadTooLarge,
    VersionNotSupported,
)
from gateway.forwarded import Forwarding, HeaderPolicy, header_tokens, request_id_from
from gateway.paths import PathError, normalize_path, split_target

SUPPORTED_VERSIONS = (HttpVersion10, HttpVersion11)
# All header lines together may be this many times max_header_bytes (nginx allows 4 x 8k too).
TOTAL_HEADER_FACTOR = 4
_CREDENTIAL_HEADERS = ("Authorization", "Proxy-Authorization")


@dataclass(frozen=True, slots=True)
class ClientRequest:
    """What the gateway read from one request. `problem` set: it is answered with that error and
    nothing else is done for it; the fields read before the problem are filled in for the log."""

    request_id: str
    forwarding: Forwarding
    path: str = ""
    query: str | None = None
    session: str | None = None
    secrets: tuple[str, ...] = ()
    websocket: bool = False
    # It asks for a protocol upgrade (WebSocket or not): the connection ends after a refusal.
    upgrade: bool = False
    problem: GatewayError | None = None

    @property
    def client_ip(self) -> str:
        return self.forwarding.client_ip


@dataclass(frozen=True, slots=True)
class RequestReader:
    """Reads requests under one config's limits."""

    policy: HeaderPolicy
    cookie: str
    max_header_bytes: int
    max_body_bytes: int | None = None

    def read(
        self,
        method: str,
        target: str,
        version: HttpVersion,
        headers: CIMultiDictProxy[str],
        raw_headers: Sequence[tuple[bytes, bytes]],
        peer: str,
    ) -> ClientRequest:
        forwarding = self.policy.forwarding(peer, headers)
        request_id = request_id_from(headers.get("X-Request-ID"))
        upgrade = "Upgrade" in headers
        if version not in SUPPORTED_VERSIONS:
            problem: GatewayError = VersionNotSupported("only HTTP/1.0 and HTTP/1.1 are served")
            return ClientRequest(request_id, forwarding, upgrade=upgrade, problem=problem)
        too_large = oversized_headers(raw_headers, self.max_header_bytes)
        if too_large is not None:
            problem = HeadersTooLarge(too_large)
            return ClientRequest(request_id, forwarding, upgrade=upgrade, problem=problem)
        if self.max_body_bytes is not None and _declared_length(headers) > self.max_body_bytes:
            # Refused before a byte of it is read; a chunked body is counted as it streams.
            problem = PayloadTooLarge("the request body is too large")
            return ClientRequest(request_id, forwarding, upgrade=upgrade, problem=problem)
        try:
            raw_path, query = split_target(target)
            path = normalize_path(raw_path)
        except PathError as exc:
            problem = BadRequest(str(exc))
            return ClientRequest(request_id, forwarding, upgrade=upgrade, problem=problem)
        cookie = scan_cookies(headers.getall("Cookie", ()), self.cookie)
        return ClientRequest(
            request_id,
            forwarding,
            path,
            query,
            cookie.value,
            secrets(headers, cookie.mentions),
            upgrade and is_websocket(method, headers),
            upgrade,
            None if cookie.problem is None else BadRequest(cookie.problem),
        )


def _declared_length(headers: CIMultiDictProxy[str]) -> int:
    value = headers.get("Content-Length", "")
    return int(value) if value.isdigit() else 0


def oversized_headers(raw_headers: Sequence[tuple[bytes, bytes]], limit: int) -> str | None:
    """Why the headers are too large, or None: one line (`Name: value`) may be `limit` bytes,
    all of them together TOTAL_HEADER_FACTOR times that.

    Measured here rather than by aiohttp's parser, which counts a name together with the previous
    header's name and a value on its own, so it both refuses legal lines and admits long ones.
    """
    total = 0
    for name, value in raw_headers:
        line = len(name) + 2 + len(value)
        if line > limit:
            return "a request header is too large"
        total += line + 2
    if total > limit * TOTAL_HEADER_FACTOR:
        return "the request headers are too large together"
    return None


def secrets(headers: CIMultiDictProxy[str], session_values: Sequence[str]) -> tuple[str, ...]:
    """Values no log line may show: session cookies, and credentials with and without scheme."""
    values = [v for v in session_values if v]
    for name in _CREDENTIAL_HEADERS:
        for credential in headers.getall(name, ()):
            values.append(credential)
            _, _, token = credential.strip().partition(" ")
            if token.strip():
                values.append(token.strip())
    return tuple(values)


def is_websocket(method: str, headers: CIMultiDictProxy[str]) -> bool:
    """A WebSocket handshake: GET with Upgrade: websocket and Connection: upgrade."""
    return (
        method == "GET"
        and "websocket" in header_tokens(headers.getall("Upgrade", ()))
        and "upgrade" in header_tokens(headers.getall("Connection", ()))
    )
