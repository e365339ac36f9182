"""Start-up and shutdown as one stack: a failure half-way undoes what was started."""

from __future__ import annotations

import asyncio
import socket

import pytest

from gateway.config import parse_config
from gateway.server import start_gateway
from tests.support.harness import Backend, config_text
from tests.support.process import free_port
from tests.support.redis_server import start_redis


def port_is_free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


async def test_admin_port_taken_undoes_the_started_listener(
    frontend: Backend, auth_api: Backend
) -> None:
    """When the admin port cannot be bound, start-up fails and the main listener is closed."""
    listen = free_port()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        admin = taken.getsockname()[1]
        text = config_text(
            frontend, auth_api, listen=f"127.0.0.1:{listen}", admin_listen=f"127.0.0.1:{admin}"
        )
        with pytest.raises(OSError):
            await start_gateway(parse_config(text, "<test>"))
    assert port_is_free(listen)


async def test_failure_after_redis_closes_the_shared_cache(
    frontend: Backend, auth_api: Backend
) -> None:
    """A listen failure after the Redis cache started closes that cache's tasks again."""
    redis = await start_redis()
    try:
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            text = config_text(
                frontend,
                auth_api,
                listen=f"127.0.0.1:{taken.getsockname()[1]}",
                auth={"cache": {"backend": "redis", "url": redis.url, "secret": "s" * 32}},
            )
            before = set(asyncio.all_tasks())
            with pytest.raises(OSError):
                await start_gateway(parse_config(text, "<test>"))
        left = [t for t in asyncio.all_tasks() - before if not t.done()]
        assert left == []
    finally:
        await redis.aclose()
