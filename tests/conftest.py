"""Fixtures: a real frontend, a real auth API and the gateway in front of them, on loopback."""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import trustme

from gateway.config import parse_config
from gateway.logs import configure_logging
from gateway.server import RunningGateway, start_gateway
from tests.support.backends import (
    GOOD_USER,
    AuthApi,
    FrontendSeen,
    RawUpstream,
    build_auth_api,
    build_frontend,
)
from tests.support.certs import PairFiles, write_pair
from tests.support.harness import (
    GOOD,
    Backend,
    GatewayFactory,
    Gw,
    LogBuffer,
    backend,
    config_text,
)


@pytest.fixture(autouse=True)
def log_output() -> io.StringIO:
    """Everything logged during the test, by the gateway and by the libraries under it."""
    buffer = LogBuffer()
    configure_logging("debug", "json", "session", stream=buffer)
    return buffer


@pytest.fixture
async def frontend() -> AsyncIterator[Backend]:
    state = FrontendSeen()
    async with backend(state, build_frontend(state)) as served:
        yield served


@pytest.fixture
async def auth_api() -> AsyncIterator[Backend]:
    state = AuthApi(sessions={GOOD: dict(GOOD_USER)})
    async with backend(state, build_auth_api(state)) as served:
        yield served


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


@pytest.fixture
def ca() -> trustme.CA:
    """A private CA made for this test."""
    return trustme.CA()


@pytest.fixture
def pair(ca: trustme.CA, tmp_path: Path) -> PairFiles:
    """A certificate for localhost and 127.0.0.1 from the test's CA, and its key, on disk."""
    return write_pair(ca, tmp_path / "live", "site")
