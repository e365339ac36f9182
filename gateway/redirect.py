"""The plain-HTTP listener beside a TLS one (`tls.redirect_http`): every request is answered with
308 to the same host and target over https, and nothing else. It never proxies, never
authenticates, never reads a body: there is nothing on it to attack but the Host header, which
must be a valid host[:port] (400 otherwise) so the Location cannot point anywhere odd.
"""

from __future__ import annotations

import ipaddress
import re
from contextlib import AsyncExitStack

from aiohttp import web
from yarl import URL

from gateway.config import GatewayConfig, HostPort
from gateway.forwarded import request_id_from
from gateway.lifecycle import bound_port
from gateway.limits import build_limits
from gateway.metrics import Metrics
from gateway.protocol import LISTEN_BACKLOG, GatewayServer, protocol_settings
from gateway.responses import error_response, redirect_response

HTTPS_PORT = 443
# 308 rather than 301: a POST stays a POST (with its body) instead of becoming a GET.
REDIRECT_STATUS = 308
# A DNS name (labels of letters, digits and inner hyphens, an optional root dot) or an IPv4
# literal, or an IPv6 literal in brackets; then an optional port.
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOST = re.compile(
    rf"^(?P<host>{_LABEL}(?:\.{_LABEL})*\.?|\[(?P<v6>[0-9A-Fa-f:.]+)\])(?::(?P<port>\d{{1,5}}))?$"
)
MAX_PORT = 65535
MAX_HOST_LENGTH = 255
# Every answer here is immediate: a stop has nothing to wait for.
SHUTDOWN_SECONDS = 1.0


def https_host(host_header: str | None) -> str | None:
    """The host part of a valid Host header (the port is dropped), or None."""
    if host_header is None or len(host_header) > MAX_HOST_LENGTH:
        return None
    match = _HOST.match(host_header)
    if match is None or int(match.group("port") or 0) > MAX_PORT:
        return None
    if match.group("v6") is not None:
        try:
            ipaddress.IPv6Address(match.group("v6"))
        except ValueError:
            return None
    return match.group("host")


def https_target(target: str) -> str | None:
    """The path and query to send the browser to: an absolute-form target gives its own."""
    if not target.isascii():
        return None
    if target.startswith("/"):
        return target
    if target.startswith(("http://", "https://")):
        return URL(target, encoded=True).raw_path_qs
    return "/"


class Redirector:
    """The handler: 308 to https://<host>[:<tls port>]<target>, or 400 for a bad Host."""

    def __init__(self, tls_port: int) -> None:
        self._port = "" if tls_port == HTTPS_PORT else f":{tls_port}"

    async def __call__(self, request: web.BaseRequest) -> web.StreamResponse:
        request_id = request_id_from(request.headers.get("X-Request-ID"))
        host = https_host(request.headers.get("Host"))
        target = https_target(request.raw_path)
        if host is None or target is None:
            reason = "the Host header is not a valid host name" if host is None else "bad target"
            return error_response(request.headers, 400, reason, request_id, close=True)
        location = f"https://{host}{self._port}{target}"
        return redirect_response(REDIRECT_STATUS, location, request_id)


async def start_redirect(
    stack: AsyncExitStack, config: GatewayConfig, address: HostPort, tls_port: int, metrics: Metrics
) -> int:
    """The plain redirect listener, closed with the stack; returns its bound port."""
    guard, _ = build_limits(config, metrics, lambda ip: False)
    server = GatewayServer(
        Redirector(tls_port), metrics, guard, config.limits, **protocol_settings(config, metrics)
    )
    runner = web.ServerRunner(server, handle_signals=False, shutdown_timeout=SHUTDOWN_SECONDS)
    await runner.setup()
    stack.push_async_callback(runner.cleanup)
    site = web.TCPSite(runner, address.host, address.port, backlog=LISTEN_BACKLOG, reuse_port=True)
    await site.start()
    return bound_port(runner)
