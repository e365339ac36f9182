"""The gateway harness: a running gateway and the real servers behind it, and small helpers."""

from __future__ import annotations

import asyncio
import contextlib
import io
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import yaml
from aiohttp import web

from gateway.config import GatewayConfig
from gateway.demo_runner import serve_app
from gateway.logs import flush_access_log
from gateway.server import RunningGateway
from tests.support.backends import AuthApi, FrontendSeen, is_protected

GOOD = "good-token-0123456789"
DEFAULT_PROTECT = ["/dashboard", "/settings", "/profile", "/admin"]


async def eventually(predicate: Callable[[], bool], deadline: float = 5.0) -> None:
    """Poll until predicate holds; fail after the deadline."""
    async with asyncio.timeout(deadline):
        while not predicate():
            await asyncio.sleep(0.01)


async def eventually_async(check: Callable[[], Awaitable[bool]], deadline: float = 5.0) -> None:
    """Like eventually, for a check that has to do I/O (a handshake, a request)."""
    async with asyncio.timeout(deadline):
        while not await check():
            await asyncio.sleep(0.05)


async def serve(app: web.Application) -> tuple[web.AppRunner, int]:
    """A real server for a test app on a free loopback port."""
    return await serve_app(app)


@dataclass
class Backend:
    state: Any
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@contextlib.asynccontextmanager
async def backend(state: Any, app: web.Application) -> AsyncIterator[Backend]:
    """A test app served on loopback for the duration, with the state it reports into."""
    runner, port = await serve(app)
    try:
        yield Backend(state, port)
    finally:
        await runner.cleanup()


@dataclass
class Gw:
    """A running gateway and the real servers behind it."""

    running: RunningGateway
    frontend: Backend
    auth: Backend
    config: GatewayConfig

    @property
    def port(self) -> int:
        return self.running.port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.running.port}"

    @property
    def api(self) -> AuthApi:
        state: AuthApi = self.auth.state
        return state

    @property
    def seen(self) -> FrontendSeen:
        state: FrontendSeen = self.frontend.state
        return state


class LogBuffer(io.StringIO):
    """A log stream whose contents include access lines still waiting in the gateway's batch."""

    def getvalue(self) -> str:
        flush_access_log()
        return super().getvalue()


GatewayFactory = Callable[..., Awaitable[Gw]]


def config_text(frontend: Backend | str, auth_backend: Backend | str, **overrides: Any) -> str:
    """A gateway config as YAML text, pointed at the given backends."""
    upstream = frontend if isinstance(frontend, str) else frontend.url
    auth_base = auth_backend if isinstance(auth_backend, str) else auth_backend.url
    data: dict[str, Any] = {
        "listen": "127.0.0.1:0",
        "upstream": upstream,
        "upstream_timeout": 2.0,
        "auth": {
            "validate_url": f"{auth_base}/api/auth/sessions/validate",
            "timeout": 1.0,
        },
        "protect": DEFAULT_PROTECT,
        "public": ["/dashboard/public"],
        "admin_listen": None,
        # Every test gateway shares the test's event loop, which a busy machine makes lag:
        # shedding is on only where a test is about it (tests/test_limits.py).
        "limits": {"overload_lag": 0},
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    return yaml.safe_dump(data)


def protected_seen(gw: Gw) -> list[str]:
    """Raw targets of every request the frontend resolved to a protected route."""
    return [entry["raw_path"] for entry in gw.seen.seen if is_protected(entry["resolved"])]
