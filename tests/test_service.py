"""The gateway as a service: real processes, real signals (SIGHUP reload, SIGTERM drain)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import yaml

from tests.support.harness import GOOD, Backend, config_text
from tests.support.process import GatewayProcess, free_port, wait_for_port


def write_config(
    path: Path, frontend: Backend, auth: Backend, port: int, **overrides: object
) -> None:
    text = config_text(frontend, auth, **overrides)
    data = yaml.safe_load(text)
    data["listen"] = f"127.0.0.1:{port}"
    data.setdefault("log", {"level": "info", "format": "json"})
    path.write_text(yaml.safe_dump(data))


async def start(
    tmp_path: Path, frontend: Backend, auth: Backend, **overrides: object
) -> tuple[GatewayProcess, int]:
    port = free_port()
    config = tmp_path / "gw.yaml"
    write_config(config, frontend, auth, port, **overrides)
    process = GatewayProcess(config, tmp_path / "out.log")
    await wait_for_port(port)
    await process.wait_for_output('"gateway started"')
    return process, port


@contextlib.asynccontextmanager
async def serving(
    tmp_path: Path, frontend: Backend, auth: Backend, **overrides: object
) -> AsyncIterator[tuple[GatewayProcess, int]]:
    """A started gateway process; at the end it gets SIGTERM and must exit 0."""
    process, port = await start(tmp_path, frontend, auth, **overrides)
    try:
        yield process, port
    finally:
        process.signal(signal.SIGTERM)
        assert await process.wait_exit() == 0


async def status_of(port: int, path: str, cookie: str | None = None) -> int:
    headers = {"Accept": "text/html", **({"Cookie": f"session={cookie}"} if cookie else {})}
    async with (
        aiohttp.ClientSession() as session,
        session.get(
            f"http://127.0.0.1:{port}{path}", headers=headers, allow_redirects=False
        ) as response,
    ):
        await response.read()
        return response.status


async def test_startup_logs_effective_config_without_credentials(
    tmp_path: Path, frontend: Backend, auth_api: Backend
) -> None:
    """Start-up logs one JSON line with the effective config, URL credentials redacted."""
    upstream = f"http://user:hunter2secret@127.0.0.1:{frontend.port}"
    async with serving(tmp_path, Backend(None, 0), auth_api, upstream=upstream) as (process, _):
        line = next(x for x in process.output.splitlines() if '"gateway started"' in x)
        event = json.loads(line)
        prefixes = [rule["prefix"] for rule in event["config"]["protect"]]
        assert prefixes == ["/dashboard", "/settings", "/profile", "/admin"]
        assert "hunter2secret" not in process.output


async def test_sighup_applies_new_rules_and_keeps_serving(
    tmp_path: Path, frontend: Backend, auth_api: Backend
) -> None:
    """SIGHUP reloads the YAML: a newly protected path needs a session from then on."""
    async with serving(tmp_path, frontend, auth_api) as (process, port):
        assert await status_of(port, "/reports") == 200
        write_config(
            tmp_path / "gw.yaml", frontend, auth_api, port, protect=["/dashboard", "/reports"]
        )
        process.signal(signal.SIGHUP)
        await process.wait_for_output('"config reloaded"')
        assert await status_of(port, "/reports") == 302
        assert await status_of(port, "/reports", GOOD) == 200


async def test_bad_reload_keeps_the_old_config(
    tmp_path: Path, frontend: Backend, auth_api: Backend
) -> None:
    """A reload with an invalid file is refused and logged; the running rules stay."""
    async with serving(tmp_path, frontend, auth_api) as (process, port):
        (tmp_path / "gw.yaml").write_text("upstream: [broken\n")
        process.signal(signal.SIGHUP)
        await process.wait_for_output("reload refused")
        assert await status_of(port, "/dashboard") == 302
        assert await status_of(port, "/dashboard", GOOD) == 200


async def test_reload_does_not_drop_a_request_in_flight(
    tmp_path: Path, frontend: Backend, auth_api: Backend
) -> None:
    """A request in flight during SIGHUP finishes normally."""
    async with serving(tmp_path, frontend, auth_api) as (process, port):
        slow = asyncio.ensure_future(status_of(port, "/slow?delay=1"))
        await _wait_seen(frontend, "/slow")
        process.signal(signal.SIGHUP)
        await process.wait_for_output('"config reloaded"')
        assert await slow == 200


async def test_sigterm_lets_requests_in_flight_finish_and_exits_0(
    tmp_path: Path, frontend: Backend, auth_api: Backend
) -> None:
    """SIGTERM stops accepting, lets a request in flight finish, and exits 0."""
    process, port = await start(tmp_path, frontend, auth_api, shutdown_grace=5)
    slow = asyncio.ensure_future(status_of(port, "/slow?delay=1"))
    await _wait_seen(frontend, "/slow")
    process.signal(signal.SIGTERM)
    assert await slow == 200
    assert await process.wait_exit() == 0
    try:
        await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        pass
    else:
        raise AssertionError("the gateway still accepts connections after SIGTERM")


async def test_sigterm_closes_websockets_with_1001(
    tmp_path: Path, frontend: Backend, auth_api: Backend
) -> None:
    """On SIGTERM every relayed WebSocket is closed with 1001 (going away)."""
    process, port = await start(tmp_path, frontend, auth_api)
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(f"http://127.0.0.1:{port}/ws") as ws,
    ):
        greeting = await ws.receive(timeout=5)
        assert greeting.type is aiohttp.WSMsgType.TEXT
        process.signal(signal.SIGTERM)
        message = await ws.receive(timeout=10)
        assert message.type is aiohttp.WSMsgType.CLOSE
        assert message.data == 1001
    assert await process.wait_exit() == 0


async def _wait_seen(frontend: Backend, path: str) -> None:
    async with asyncio.timeout(10):
        while not any(entry["raw_path"].startswith(path) for entry in frontend.state.seen):
            await asyncio.sleep(0.02)
