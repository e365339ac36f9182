"""The admin listener: liveness, readiness with the failing check named, and metrics."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST
from yarl import URL

from gateway.config import GatewayConfig
from gateway.metrics import Metrics

READY_CHECK_TIMEOUT = 1.0


async def _reachable(url: str) -> str | None:
    """None when a TCP connection to the URL's host and port opens in time, else why not."""
    target = URL(url)
    host, port = target.host or "", target.port or (443 if target.scheme == "https" else 80)
    try:
        async with asyncio.timeout(READY_CHECK_TIMEOUT):
            _, writer = await asyncio.open_connection(host, port)
    except TimeoutError:
        return "timed out"
    except OSError as exc:
        return exc.strerror or type(exc).__name__
    writer.close()
    return None


def build_admin_app(current: Callable[[], GatewayConfig], metrics: Metrics) -> web.Application:
    """Routes of the admin listener; `current` gives the config in force now (reload swaps it)."""

    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(request: web.Request) -> web.Response:
        config = current()
        targets = {
            "upstream": config.upstream,
            **{f"route {route.prefix}": route.upstream for route in config.routes},
            "auth_api": config.auth.validate_url,
        }
        results = await asyncio.gather(*(_reachable(url) for url in targets.values()))
        checks = {"config": "ok"} | {
            name: "ok" if problem is None else f"unreachable: {problem}"
            for name, problem in zip(targets, results, strict=True)
        }
        failing = [name for name, result in checks.items() if result != "ok"]
        body: dict[str, object] = {
            "status": "not ready" if failing else "ready",
            "checks": checks,
            "failing": failing,
        }
        return web.json_response(body, status=503 if failing else 200)

    async def metrics_text(request: web.Request) -> web.Response:
        response = web.Response(body=metrics.exposition())
        response.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return response

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_text)
    return app
