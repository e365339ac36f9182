"""Start-up pieces shared by the single process and the `workers: N` supervisor.

Each one registers its own undoing on an AsyncExitStack as soon as it has started, so a failure
half-way through start-up (a port taken, a bad socket) undoes what was started, in reverse order.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING

from aiohttp import web

from gateway.admin import AdminBackend, build_admin_app
from gateway.config import GatewayConfig, HostPort
from gateway.metrics import Metrics
from gateway.tls import ServerCertificates

if TYPE_CHECKING:
    # Imported where it is used: redis costs 7 MiB of memory a gateway without it need not pay.
    from gateway.shared_cache import SharedCache


async def start_shared_cache(
    stack: AsyncExitStack,
    config: GatewayConfig,
    on_revoke: Callable[[str], None],
    on_resubscribe: Callable[[], None] | None = None,
) -> SharedCache | None:
    """The Redis cache when one is configured, closed with the stack."""
    cache = config.auth.cache
    if cache.backend != "redis" or cache.url is None:
        return None
    from gateway.shared_cache import SharedCache

    shared = SharedCache(cache.url, on_revoke=on_revoke, on_resubscribe=on_resubscribe)
    await shared.start()
    stack.push_async_callback(shared.close)
    return shared


def start_certificates(
    stack: AsyncExitStack, config: GatewayConfig, metrics: Metrics
) -> ServerCertificates | None:
    """The TLS listener's certificate pair when tls is configured, watched when asked; a pair
    that does not load raises PairRefused and nothing starts."""
    if config.tls is None:
        return None
    certificates = ServerCertificates(config.tls, metrics)
    if config.tls.watch:
        watcher = asyncio.ensure_future(certificates.watch())
        stack.callback(watcher.cancel)
    return certificates


async def start_admin(stack: AsyncExitStack, backend: AdminBackend, address: HostPort) -> int:
    """The admin listener (/healthz, /readyz, /metrics, revocation); returns its bound port."""
    runner = web.AppRunner(build_admin_app(backend), access_log=None, handle_signals=False)
    await runner.setup()
    stack.push_async_callback(runner.cleanup)
    await web.TCPSite(runner, address.host, address.port).start()
    return bound_port(runner)


def bound_port(runner: web.BaseRunner) -> int:
    for address in runner.addresses:
        if isinstance(address, tuple):
            return int(address[1])
    raise RuntimeError("the listener is not on a TCP port")
