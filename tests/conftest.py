"""Fixtures: a real frontend, a real auth API and the gateway in front of them, on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import io
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
import yaml
from aiohttp import web

from gateway.config import GatewayConfig, parse_config
from gateway.demo_runner import serve_app
from gateway.logs import configure_logging, flush_access_log
from gateway.server import RunningGateway, start_gateway
from tests.backends import GOOD_USER, AuthApi, Frontend, RawUpstream, build_auth_api, build_frontend

GOOD = "good-token-0123456789"
DEFAULT_PROTECT = ["/dashboard", "/settings", "/profile", "/admin"]


async def eventually(predicate: Callable[[], bool], deadline: float = 5.0) -> None:
    """Poll until predicate holds; fail after the deadline."""
    async with asyncio.timeout(deadline):
        while not predicate():
            await asyncio.sleep(0.01)


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
    def seen(self) -> Frontend:
        state: Frontend = self.frontend.state
        return state


class LogBuffer(io.StringIO):
    """A log stream whose contents include access lines still waiting in the gateway's batch."""

    def getvalue(self) -> str:
        flush_access_log()
        return super().getvalue()


@pytest.fixture(autouse=True)
def log_output() -> io.StringIO:
    """Everything logged during the test, by the gateway and by the libraries under it."""
    buffer = LogBuffer()
    configure_logging("debug", "json", "session", stream=buffer)
    return buffer


@contextlib.asynccontextmanager
async def backend(state: Any, app: web.Application) -> AsyncIterator[Backend]:
    """A test app served on loopback for the duration, with the state it reports into."""
    runner, port = await serve(app)
    try:
        yield Backend(state, port)
    finally:
        await runner.cleanup()


@pytest.fixture
async def frontend() -> AsyncIterator[Backend]:
    state = Frontend()
    async with backend(state, build_frontend(state)) as served:
        yield served


@pytest.fixture
async def auth_api() -> AsyncIterator[Backend]:
    state = AuthApi(sessions={GOOD: dict(GOOD_USER)})
    async with backend(state, build_auth_api(state)) as served:
        yield served


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
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    return yaml.safe_dump(data)


@pytest.fixture
async def gateway_factory(frontend: Backend, auth_api: Backend) -> AsyncIterator[GatewayFactory]:
    started: list[RunningGateway] = []

    async def make(
        upstream: Backend | str | None = None,
        auth: Backend | str | dict[str, Any] | None = None,
        **overrides: Any,
    ) -> Gw:
        """`auth` is either where the auth API is (a URL or Backend) or overrides of auth keys."""
        if isinstance(auth, dict):
            overrides["auth"] = auth
            auth = None
        config = parse_config(
            config_text(upstream or frontend, auth or auth_api, **overrides), "<test>"
        )
        running = await start_gateway(config)
        started.append(running)
        return Gw(running, frontend, auth_api, config)

    yield make
    for running in started:
        await running.close()


@pytest.fixture
async def gw(gateway_factory: GatewayFactory) -> Gw:
    """The gateway with the default test config."""
    return await gateway_factory()


@pytest.fixture
async def client() -> AsyncIterator[aiohttp.ClientSession]:
    """A plain HTTP client that follows no redirects and keeps no cookies."""
    async with aiohttp.ClientSession(
        cookie_jar=aiohttp.DummyCookieJar(), auto_decompress=False
    ) as session:
        yield session


@pytest.fixture
async def raw_upstream() -> AsyncIterator[tuple[RawUpstream, int]]:
    """An upstream that answers with whatever bytes the test puts in it."""
    upstream = RawUpstream()
    server = await asyncio.start_server(upstream.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    yield upstream, port
    server.close()
    await server.wait_closed()
