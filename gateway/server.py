"""The gateway's request path, assembled in one place, and the server that runs it."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import aiohttp
import structlog
from aiohttp import HttpVersion10, HttpVersion11, web
from aiohttp.http_exceptions import BadHttpMessage, LineTooLong
from aiohttp.web_protocol import RequestHandler, _ErrInfo
from multidict import CIMultiDict, CIMultiDictProxy

from gateway import pages
from gateway.admin import RevokeRefused, build_admin_app
from gateway.auth import AuthClient, Outcome, Verdict
from gateway.config import GatewayConfig
from gateway.cookies import find_session, mentions
from gateway.errors import (
    AuthUnavailable,
    BadRequest,
    GatewayError,
    HeadersTooLarge,
    VersionNotSupported,
)
from gateway.forwarded import HeaderPolicy, request_id_from
from gateway.logs import REQUEST_INFO_KEY, AccessLogger, RequestInfo, bind_secrets
from gateway.metrics import Metrics
from gateway.paths import PathError, PrefixTable, normalize_path, split_target
from gateway.policy import PUBLIC_RULE, Access, Rule, build_rules
from gateway.proxy import header_tokens
from gateway.routing import KEEPALIVE_SECONDS, Pools, Router

if TYPE_CHECKING:
    # Imported where it is used: redis costs 7 MiB of memory a gateway without it need not pay.
    from gateway.shared_cache import SharedCache

log = structlog.get_logger("gateway.server")

# The request line (method, target, version) may be this long; longer gets 414.
MAX_REQUEST_LINE_BYTES = 16384
TOTAL_HEADER_FACTOR = 4
MAX_HEADER_COUNT = 128
LISTEN_BACKLOG = 1024
SUPPORTED_VERSIONS = (HttpVersion10, HttpVersion11)
CLIENT_CLOSED_REQUEST = 499
NO_STORE = ("Cache-Control", "no-store")
VARY_COOKIE = ("Vary", "Cookie")


@dataclass
class Runtime:
    """Everything built from one config: rules, routes, policies. Swapped whole on reload."""

    config: GatewayConfig
    rules: PrefixTable[Rule]
    policy: HeaderPolicy
    auth: AuthClient
    router: Router
    login_path: str
    login_query: str

    @classmethod
    def build(
        cls,
        config: GatewayConfig,
        pools: Pools,
        metrics: Metrics,
        shared: SharedCache | None = None,
    ) -> Runtime:
        login_path, _, login_query = config.login_url.partition("?")
        return cls(
            config=config,
            rules=build_rules(config),
            policy=HeaderPolicy(config.trusted_networks, config.auth.identity_headers),
            auth=AuthClient(config.auth, pools.auth, metrics, shared),
            router=Router(config, pools, metrics),
            login_path=login_path,
            login_query=login_query,
        )


def _is_websocket(request: web.BaseRequest) -> bool:
    headers = request.headers
    return (
        "Upgrade" in headers
        and request.method == "GET"
        and "websocket" in header_tokens(headers.getall("Upgrade", ()))
        and "upgrade" in header_tokens(headers.getall("Connection", ()))
    )


def _check_header_sizes(request: web.BaseRequest, limit: int) -> None:
    """One line (`Name: value`) may be `limit` bytes, all of them together four times that.

    Checked here rather than by aiohttp's parser, which counts a name together with the previous
    header's name and a value on its own, so it both refuses legal lines and admits long ones.
    """
    total = 0
    for name, value in request.raw_headers:
        line = len(name) + 2 + len(value)
        if line > limit:
            raise HeadersTooLarge("a request header is too large")
        total += line + 2
    if total > limit * TOTAL_HEADER_FACTOR:
        raise HeadersTooLarge("the request headers are too large together")


def _secrets(headers: CIMultiDictProxy[str], session_values: list[str]) -> tuple[str, ...]:
    """Values no log line may show: session cookies, and credentials with and without scheme."""
    values = [v for v in session_values if v]
    for name in ("Authorization", "Proxy-Authorization"):
        for credential in headers.getall(name, ()):
            values.append(credential)
            _, _, token = credential.strip().partition(" ")
            if token.strip():
                values.append(token.strip())
    return tuple(values)


def _private_cache(headers: CIMultiDict[str]) -> None:
    """A page that depends on the session must never be stored by a shared cache."""
    directives = header_tokens(headers.getall("Cache-Control", ()))
    if not directives & {"no-store", "private"}:
        kept = [
            token.strip()
            for value in headers.getall("Cache-Control", ())
            for token in value.split(",")
            if token.strip() and token.strip().lower() != "public"
        ]
        headers.popall("Cache-Control", None)
        headers["Cache-Control"] = ", ".join(["private", *kept])
    vary = header_tokens(headers.getall("Vary", ()))
    if "cookie" not in vary and "*" not in vary:
        headers.add("Vary", "Cookie")


def _response_adjuster(
    session_dependent: bool, set_cookies: tuple[str, ...]
) -> Callable[[CIMultiDict[str]], None] | None:
    """What the gateway adds to a relayed answer: cache privacy, the auth API's cookies."""
    if not session_dependent and not set_cookies:
        return None

    def adjust(headers: CIMultiDict[str]) -> None:
        if session_dependent:
            _private_cache(headers)
        # Added beside the frontend's own Set-Cookie headers, never merged into one.
        for cookie in set_cookies:
            headers.add("Set-Cookie", cookie)

    return adjust


class Gateway:
    """The request handler. Its steps run in a fixed order, and the order is the security model:

    1. Identify the request (id, client ip behind trusted proxies) so every answer and log line,
       including the earliest refusals, carries them.
    2. Refuse what cannot be read without ambiguity (header sizes, the target, the cookie) before
       any work is done for it: nothing ambiguous reaches auth or the frontend.
    3. Decide access on the normalized path (the same path routing uses); nothing is sent to the
       frontend before that decision.
    4. Build the upstream headers: strip every header the gateway sets, then set them.
    5. Relay, streaming both ways.
    """

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        # Relayed WebSockets (client side -> upstream side), closed with 1001 on shutdown.
        self.websockets: dict[web.WebSocketResponse, aiohttp.ClientWebSocketResponse] = {}

    async def __call__(self, request: web.BaseRequest) -> web.StreamResponse:
        rt = self.runtime
        headers = request.headers
        forwarding = rt.policy.forwarding(request.remote or "", headers)
        info = RequestInfo(
            request_id=request_id_from(headers.get("X-Request-ID")),
            client_ip=forwarding.client_ip,
            path="",
        )
        request[REQUEST_INFO_KEY] = info
        try:
            if request.version not in SUPPORTED_VERSIONS:
                raise VersionNotSupported("only HTTP/1.0 and HTTP/1.1 are served")
            _check_header_sizes(request, rt.config.max_header_bytes)
            try:
                raw_path, raw_query = split_target(request.raw_path)
                path = normalize_path(raw_path)
            except PathError as exc:
                raise BadRequest(str(exc)) from None
            # An empty query ("/x?") is still forwarded as it came; None means no "?" at all.
            query = raw_query if "?" in request.raw_path else None
            info.path, info.query = path, raw_query
            cookies = headers.getall("Cookie", ())
            # Registered before anything can refuse the request, so no line logs them.
            info.secrets = _secrets(headers, mentions(cookies, rt.config.auth.cookie))
            bind_secrets(info.secrets)
            session = find_session(cookies, rt.config.auth.cookie)
            rule = rt.rules.lookup(path) or PUBLIC_RULE
            verdict = await self._decide(rule, session, forwarding.client_ip, info)
            if rule.access is Access.PROTECT:
                if verdict.identity is None:
                    return self._deny(request, path, query, verdict.set_cookies)
                field = rule.unmet(verdict.identity.claims)
                if field is not None:
                    info.auth = Outcome.FORBIDDEN
                    return self._forbid(request, field, info.request_id)
            websocket = _is_websocket(request)
            upstream_headers = rt.policy.upstream_headers(
                headers, forwarding, info.request_id, websocket=websocket
            )
            if verdict.identity is not None:
                upstream_headers.extend(verdict.identity.headers)
            relay, target = rt.router.resolve(path, query)
            if websocket:
                return await relay.websocket(request, target, upstream_headers, self.websockets)
            adjust = _response_adjuster(rule.access is not Access.PUBLIC, verdict.set_cookies)
            # aiohttp stops parsing a connection after an upgrade it does not carry out (h2c):
            # close it after this answer rather than leave pipelined bytes unanswered.
            close_after = "Upgrade" in headers
            response = await relay.http(request, target, upstream_headers, adjust, close_after)
            info.upstream_status = response.status
            return response
        except GatewayError as exc:
            if exc.outcome is not None:
                info.auth = exc.outcome
            info.error = exc.reason
            response = error_response(request, exc.status, exc.reason, info.request_id, exc.headers)
            if exc.close_connection or "Upgrade" in headers:
                response.force_close()
            return response

    async def _decide(
        self, rule: Rule, session: str | None, client_ip: str, info: RequestInfo
    ) -> Verdict:
        """The session's verdict as the rule needs it; optional paths never fail on it."""
        if rule.access is Access.PUBLIC:
            return ANONYMOUS_PUBLIC
        if session is None:
            verdict = NO_SESSION if rule.access is Access.PROTECT else ANONYMOUS
        elif rule.access is Access.PROTECT:
            verdict = await self.runtime.auth.verify(session, client_ip, info.request_id)
        else:
            try:
                verdict = await self.runtime.auth.verify(session, client_ip, info.request_id)
            except AuthUnavailable as exc:
                # Anonymous is allowed here anyway: degrade rather than refuse, and say so.
                log.warning("optional sign-in degraded", reason=exc.reason)
                verdict = DEGRADED
            else:
                if verdict.identity is None:
                    verdict = Verdict(Outcome.ANONYMOUS, None, verdict.set_cookies)
        info.auth = verdict.outcome
        return verdict

    def _deny(
        self,
        request: web.BaseRequest,
        path: str,
        query: str | None,
        set_cookies: tuple[str, ...],
    ) -> web.StreamResponse:
        rt = self.runtime
        headers = request.headers
        # A WebSocket handshake cannot follow a redirect: it gets 401 like any non-page request.
        if _is_websocket(request) or pages.wants_json(
            headers.get("Accept"), headers.get("X-Requested-With")
        ):
            body, content_type = pages.error_body(
                401,
                "Sign-in required",
                "A valid session is needed for this resource.",
                request[REQUEST_INFO_KEY].request_id,
                json_body=True,
            )
            response = OwnResponse(status=401, body=body)
            response.headers["Content-Type"] = content_type
            response.headers["WWW-Authenticate"] = f'Cookie realm="{rt.config.auth.cookie}"'
        else:
            target = path + (f"?{query}" if query else "")
            separator = "&" if rt.login_query else ""
            location = f"{rt.login_path}?{rt.login_query}{separator}next={quote(target, safe='')}"
            response = OwnResponse(status=302, headers={"Location": location})
        request_id = request[REQUEST_INFO_KEY].request_id
        response.headers.extend((NO_STORE, VARY_COOKIE, ("X-Request-ID", request_id)))
        for cookie in set_cookies:
            response.headers.add("Set-Cookie", cookie)
        return response

    def _forbid(self, request: web.BaseRequest, field: str, request_id: str) -> web.Response:
        # A signed-in user who fails a rule is refused, never sent to sign in again (that loops).
        return error_response(
            request, 403, f"this page requires a different account ({field})", request_id
        )


ANONYMOUS_PUBLIC = Verdict(Outcome.PUBLIC, None)
ANONYMOUS = Verdict(Outcome.ANONYMOUS, None)
NO_SESSION = Verdict(Outcome.DENIED, None)
DEGRADED = Verdict(Outcome.DEGRADED, None)


class OwnResponse(web.Response):
    """An answer the gateway writes itself: no Server header naming the software and version."""

    async def _prepare_headers(self) -> None:
        await super()._prepare_headers()
        self._headers.popall("Server", None)


def error_response(
    request: web.BaseRequest,
    status: int,
    reason: str,
    request_id: str,
    extra_headers: tuple[tuple[str, str], ...] = (),
) -> OwnResponse:
    """The gateway's own answer: an HTML page for a browser, JSON for everything else."""
    title, advice = pages.STATUS_TEXT.get(status, ("Error", "Try again later."))
    as_json = pages.wants_json(
        request.headers.get("Accept"), request.headers.get("X-Requested-With")
    )
    sentence = reason[:1].upper() + reason[1:]
    body, content_type = pages.error_body(
        status, title, f"{sentence}. {advice}", request_id, json_body=as_json
    )
    response = OwnResponse(status=status, body=body)
    response.headers["Content-Type"] = content_type
    # Whether the gateway answers itself can depend on the cookie: no cache may reuse it.
    response.headers.extend((NO_STORE, VARY_COOKIE, ("X-Request-ID", request_id), *extra_headers))
    return response


class ProtocolHandler(RequestHandler):
    """aiohttp's connection handler with parse errors answered by status, never by exception text.

    aiohttp answers an oversized header with 400 and quotes the offending line (a cookie) in the
    body and its log; here it is 431 (414 for the request line) with a fixed reason, quoting
    nothing.
    """

    def data_received(self, data: bytes) -> None:
        queued = len(self._messages)
        super().data_received(data)
        request = self._current_request
        if request is None or not any(
            isinstance(message, _ErrInfo) for message, _ in list(self._messages)[queued:]
        ):
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
        reason = "the request could not be read"
        if isinstance(exc, ConnectionError):
            # The client went away mid-answer: nothing can be sent; logged as nginx does (499).
            response = OwnResponse(status=CLIENT_CLOSED_REQUEST)
            response.force_close()
            return response
        if isinstance(exc, LineTooLong):
            limit = exc.args[1] if len(exc.args) > 1 else None
            if limit == self.max_field_size:
                status, reason = 431, "a request header is too large"
            else:
                status, reason = 414, "the request target is too long"
        elif isinstance(exc, BadHttpMessage):
            if "Too many headers" in str(exc):
                status, reason = 431, "too many request headers"
            else:
                status = 400
                reason = "the request is malformed"
        elif status >= 500:
            log.error("unhandled error", error=type(exc).__name__ if exc else None)
            reason = "the gateway failed to handle the request"
        else:
            status = 400
        request_id = request_id_from(None)
        response = error_response(request, status, reason, request_id)
        response.force_close()
        return response


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
    # The parser's own limit is only a memory guard (lines are checked in _check_header_sizes):
    # it must never refuse a line the configured limit allows.
    field_limit = config.max_header_bytes * TOTAL_HEADER_FACTOR
    observed = type(
        "ObservedAccessLogger", (AccessLogger,), {"observer": staticmethod(metrics.observe_request)}
    )
    return {
        "max_line_size": MAX_REQUEST_LINE_BYTES,
        "max_field_size": field_limit,
        "max_headers": MAX_HEADER_COUNT,
        "access_log_class": observed,
        "keepalive_timeout": KEEPALIVE_SECONDS,
    }


@dataclass
class RunningGateway:
    """A started gateway: its listener, pools and shared cache, and how to stop it.

    It is also what the admin routes ask (AdminBackend): config, checks, metrics, revocation.
    """

    gateway: Gateway
    runner: web.ServerRunner
    pools: Pools
    metrics: Metrics
    port: int
    shared: SharedCache | None = None
    admin: web.AppRunner | None = None
    admin_port: int | None = None

    def current_config(self) -> GatewayConfig:
        return self.gateway.runtime.config

    async def degraded_checks(self) -> dict[str, str]:
        checks = {} if self.shared is None else {"redis": self.shared.status}
        return checks | self.gateway.runtime.auth.checks()

    def exposition(self) -> bytes:
        return self.metrics.exposition()

    def evict_here(self, session: str | None, digest: str | None) -> dict[str, object]:
        """Evict a session from this process only (a worker asked by its supervisor)."""
        auth = self.gateway.runtime.auth
        if digest is None:
            assert session is not None
            digest = auth.digest(session)
        elif not auth.config.cache.secret:
            raise RevokeRefused("revoking by digest needs auth.cache.secret (digests are keyed)")
        return {"digest": digest, "local": auth.evict(digest)}

    async def revoke(self, session: str | None, digest: str | None) -> dict[str, object]:
        """Evict a session here and, through Redis, on every replica."""
        result = self.evict_here(session, digest)
        key = str(result["digest"])
        result["shared"] = None if self.shared is None else await self.shared.revoke(key)
        log.info("session revoked", digest=key[:12], local=result["local"], shared=result["shared"])
        return result

    async def start_admin(self, host: str, port: int) -> None:
        self.admin = web.AppRunner(build_admin_app(self), access_log=None, handle_signals=False)
        await self.admin.setup()
        await web.TCPSite(self.admin, host, port).start()
        self.admin_port = _bound_port(self.admin)

    async def close(self) -> None:
        await self.runner.cleanup()
        if self.admin is not None:
            await self.admin.cleanup()
        if self.shared is not None:
            await self.shared.close()
        await self.pools.close()


async def start_gateway(config: GatewayConfig, sock: socket.socket | None = None) -> RunningGateway:
    """Start serving `config` on its listen address (or on a given socket), and the admin port."""
    metrics = Metrics()
    pools = Pools()
    shared: SharedCache | None = None
    started: list[Gateway] = []

    def evict(digest: str) -> None:
        for gateway in started:
            gateway.runtime.auth.evict(digest)

    def evict_all() -> None:
        for gateway in started:
            gateway.runtime.auth.evict_all()

    cache = config.auth.cache
    if cache.backend == "redis" and cache.url is not None:
        # Revocations from other replicas evict here; after a reconnect some may have been
        # missed, so the local level starts empty.
        from gateway.shared_cache import SharedCache

        shared = SharedCache(cache.url, on_revoke=evict, on_resubscribe=evict_all)
        await shared.start()
    gateway = Gateway(Runtime.build(config, pools, metrics, shared))
    started.append(gateway)
    server = GatewayServer(gateway, metrics, **protocol_settings(config, metrics))
    runner = web.ServerRunner(server, handle_signals=False, shutdown_timeout=config.shutdown_grace)
    await runner.setup()
    if sock is not None:
        site: web.BaseSite = web.SockSite(runner, sock, backlog=LISTEN_BACKLOG)
    else:
        address = config.listen_address
        site = web.TCPSite(
            runner, address.host, address.port, backlog=LISTEN_BACKLOG, reuse_port=True
        )
    await site.start()
    running = RunningGateway(gateway, runner, pools, metrics, _bound_port(runner), shared)
    admin_address = config.admin_address
    if admin_address is not None:
        await running.start_admin(admin_address.host, admin_address.port)
    return running


def _bound_port(runner: web.BaseRunner) -> int:
    for address in runner.addresses:
        if isinstance(address, tuple):
            return int(address[1])
    raise RuntimeError("the gateway is not listening on a TCP port")
