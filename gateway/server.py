"""A running gateway: its listener, pools, shared cache and admin port, started and stopped as one.

Start-up is one AsyncExitStack: each piece registers its undoing as soon as it has started, so a
failure half-way (the port taken, Redis set-up raising) undoes what was started, in reverse
order, and close() is the same stack unwound.
"""

from __future__ import annotations

import socket
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import structlog
from aiohttp import web

from gateway.admin import revocation_digest
from gateway.aiohttp_internals import every_answer_has
from gateway.config import GatewayConfig
from gateway.handler import Gateway, Runtime
from gateway.lifecycle import bound_port, start_admin, start_certificates, start_shared_cache
from gateway.limits import LoadWatch, build_limits
from gateway.metrics import Metrics
from gateway.protocol import LISTEN_BACKLOG, GatewayServer, protocol_settings
from gateway.redirect import start_redirect
from gateway.routing import Pools
from gateway.tls import ServerCertificates

if TYPE_CHECKING:
    # Imported where it is used: redis costs 7 MiB of memory a gateway without it need not pay.
    from gateway.shared_cache import SharedCache

log = structlog.get_logger("gateway.server")


@dataclass
class RunningGateway:
    """A started gateway, and how to stop it.

    It is also what the admin routes ask (AdminBackend): config, checks, metrics, revocation.
    """

    gateway: Gateway
    runner: web.ServerRunner
    pools: Pools
    metrics: Metrics
    port: int
    shared: SharedCache | None = None
    admin_port: int | None = None
    certificates: ServerCertificates | None = None
    redirect_port: int | None = None
    stack: AsyncExitStack = field(default_factory=AsyncExitStack)

    def current_config(self) -> GatewayConfig:
        return self.gateway.runtime.config

    async def degraded_checks(self) -> dict[str, str]:
        checks = {} if self.shared is None else {"redis": self.shared.status}
        if self.certificates is not None:
            checks["tls"] = self.certificates.check()
        load = self.gateway.load.check() if self.gateway.load is not None else None
        if load is not None:
            checks["load"] = load
        return checks | self.gateway.runtime.auth.checks()

    def exposition(self) -> bytes:
        return self.metrics.exposition()

    def evict_here(self, session: str | None, digest: str | None) -> dict[str, object]:
        """Evict a session from this process only (a worker asked by its supervisor)."""
        auth = self.gateway.runtime.auth
        digest = revocation_digest(auth.digest, session, digest)
        return {"digest": digest, "local": auth.evict(digest)}

    async def revoke(self, session: str | None, digest: str | None) -> dict[str, object]:
        """Evict a session here and, through Redis, on every replica."""
        result = self.evict_here(session, digest)
        key = str(result["digest"])
        result["shared"] = None if self.shared is None else await self.shared.revoke(key)
        log.info("session revoked", digest=key[:12], local=result["local"], shared=result["shared"])
        return result

    async def close(self) -> None:
        await self.stack.aclose()


async def start_gateway(config: GatewayConfig, sock: socket.socket | None = None) -> RunningGateway:
    """Start serving `config` on its listen address (or on a given socket), and the admin port."""
    stack = AsyncExitStack()
    try:
        return await _start(stack, config, sock)
    except BaseException:
        await stack.aclose()
        raise


async def _start(
    stack: AsyncExitStack, config: GatewayConfig, sock: socket.socket | None
) -> RunningGateway:
    metrics = Metrics()
    pools = Pools(config.upstream_tls)
    stack.push_async_callback(pools.close)
    # The gateway is built after the shared cache it uses, but revocations heard from other
    # replicas must reach whatever auth client it has then (a reload swaps it).
    started: list[Gateway] = []

    def evict(digest: str) -> None:
        for gateway in started:
            gateway.runtime.auth.evict(digest)

    def evict_all() -> None:
        # After a reconnect some revocations may have been missed: the local level starts empty.
        for gateway in started:
            gateway.runtime.auth.evict_all()

    shared = await start_shared_cache(stack, config, evict, evict_all)
    gateway = Gateway(Runtime.build(config, pools, metrics, shared))
    started.append(gateway)
    certificates = start_certificates(stack, config, metrics)
    runner = await _listen(stack, config, gateway, metrics, sock, certificates)
    running = RunningGateway(gateway, runner, pools, metrics, bound_port(runner), shared)
    running.stack, running.certificates = stack, certificates
    if config.redirect_address is not None:
        running.redirect_port = await start_redirect(
            stack, config, config.redirect_address, running.port, metrics
        )
    if config.admin_address is not None:
        running.admin_port = await start_admin(stack, running, config.admin_address)
    return running


async def _listen(
    stack: AsyncExitStack,
    config: GatewayConfig,
    gateway: Gateway,
    metrics: Metrics,
    sock: socket.socket | None,
    certificates: ServerCertificates | None,
) -> web.ServerRunner:
    """The client-facing listener: plain, or TLS with HSTS on every answer when configured; its
    connections admitted within the limits, and the load watch that sheds when overloaded."""
    guard, refusals = build_limits(config, metrics, lambda ip: gateway.runtime.policy.trusts(ip))
    server = GatewayServer(
        gateway, metrics, guard, config.limits, **protocol_settings(config, metrics)
    )
    gateway.load = LoadWatch(guard, refusals, server.handlers, config.limits.overload_lag)
    gateway.load.start()
    stack.push_async_callback(gateway.load.stop)
    hsts = None if config.tls is None else config.tls.hsts_header
    if hsts is not None:
        server.request_factory = every_answer_has(server, "Strict-Transport-Security", hsts)
    runner = web.ServerRunner(server, handle_signals=False, shutdown_timeout=config.shutdown_grace)
    await runner.setup()
    stack.push_async_callback(runner.cleanup)
    context = None if certificates is None else certificates.listener_context
    if sock is not None:
        site: web.BaseSite = web.SockSite(runner, sock, backlog=LISTEN_BACKLOG, ssl_context=context)
    else:
        address = config.listen_address
        site = web.TCPSite(
            runner,
            address.host,
            address.port,
            backlog=LISTEN_BACKLOG,
            reuse_port=True,
            ssl_context=context,
        )
    await site.start()
    return runner
