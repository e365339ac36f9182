"""Connection limits over real sockets: header and body deadlines, connection caps, shedding."""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import yaml

from tests.support.harness import GOOD, Backend, GatewayFactory, Gw, config_text, eventually
from tests.support.process import GatewayProcess, free_port, wait_for_port
from tests.support.rawhttp import exchange, get, read_response

DEADLINE = 10.0


async def connect(
    port: int, host: str = "127.0.0.1", source: str | None = None
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    local = None if source is None else (source, 0)
    return await asyncio.open_connection(host, port, local_addr=local)


async def closed_by_peer(reader: asyncio.StreamReader, deadline: float = DEADLINE) -> bytes:
    """Everything the gateway sent until it closed the connection."""
    async with asyncio.timeout(deadline):
        return await reader.read()


@contextlib.asynccontextmanager
async def held(
    port: int, count: int, first: bytes = b"", source: str | None = None
) -> AsyncIterator[list[tuple[asyncio.StreamReader, asyncio.StreamWriter]]]:
    """`count` open connections, each having sent `first`."""
    opened = []
    try:
        for _ in range(count):
            reader, writer = await connect(port, source=source)
            if first:
                writer.write(first)
                await writer.drain()
            opened.append((reader, writer))
        yield opened
    finally:
        for _, writer in opened:
            writer.close()


async def test_slowloris_gets_408_and_close(gateway_factory: GatewayFactory) -> None:
    """Headers sent a line at a time are cut at header_timeout with 408, from the first byte."""
    gw = await gateway_factory(limits={"header_timeout": 1})
    reader, writer = await connect(gw.port)
    started = time.monotonic()
    writer.write(b"GET /login HTTP/1.1\r\nHost: t\r\n")

    async def trickle() -> None:
        with contextlib.suppress(ConnectionError):
            for n in range(100):
                await asyncio.sleep(0.3)
                writer.write(f"X-Slow-{n}: 1\r\n".encode())

    task = asyncio.ensure_future(trickle())
    try:
        answer = await closed_by_peer(reader)
    finally:
        task.cancel()
        writer.close()
    assert answer.startswith(b"HTTP/1.1 408 ")
    assert 1.0 <= time.monotonic() - started < 3.5


async def test_silent_connection_is_closed_without_an_answer(
    gateway_factory: GatewayFactory,
) -> None:
    """A connection that sends nothing is closed at header_timeout, with nothing written."""
    gw = await gateway_factory(limits={"header_timeout": 1})
    reader, writer = await connect(gw.port)
    try:
        assert await closed_by_peer(reader) == b""
    finally:
        writer.close()


async def test_kept_alive_connection_waits_idle_timeout_not_header_timeout(
    gateway_factory: GatewayFactory,
) -> None:
    """After an answer, a kept-alive connection may idle past header_timeout (idle_timeout)."""
    gw = await gateway_factory(limits={"header_timeout": 1, "idle_timeout": 30})
    reader, writer = await connect(gw.port)
    try:
        writer.write(get("/public/a"))
        assert (await read_response(reader)).status == 200
        await asyncio.sleep(2.0)
        writer.write(get("/public/b"))
        assert (await read_response(reader)).status == 200
    finally:
        writer.close()


async def test_stalled_upload_gets_408(gateway_factory: GatewayFactory) -> None:
    """A request body that sends nothing for body_timeout is answered 408 and closed."""
    gw = await gateway_factory(limits={"body_timeout": 1})
    reader, writer = await connect(gw.port)
    try:
        writer.write(get("/public/upload", "Content-Length: 100", method="POST") + b"0123456789")
        answer = await closed_by_peer(reader)
    finally:
        writer.close()
    assert answer.startswith(b"HTTP/1.1 408 ")


@pytest.mark.parametrize(
    "target", ["/events?count=12&gap=0.3", "/slow?delay=3"], ids=["sse", "slow-answer"]
)
async def test_long_responses_are_not_cut(gateway_factory: GatewayFactory, target: str) -> None:
    """An event stream or a slow answer outlives header_timeout and body_timeout."""
    gw = await gateway_factory(limits={"header_timeout": 1, "body_timeout": 1}, upstream_timeout=10)
    response = await asyncio.wait_for(exchange(gw.port, get(target)), DEADLINE)
    assert response.status == 200


async def test_content_length_over_max_body_bytes_is_413(gateway_factory: GatewayFactory) -> None:
    """A declared body over max_body_bytes is refused before it is read."""
    gw = await gateway_factory(limits={"max_body_bytes": 1000})
    response = await exchange(gw.port, get("/public/x", "Content-Length: 5000", method="POST"))
    assert response.status == 413
    assert gw.seen.seen == []


async def test_chunked_body_over_max_body_bytes_is_413(gateway_factory: GatewayFactory) -> None:
    """A chunked body is counted as it streams and cut once over max_body_bytes."""
    gw = await gateway_factory(limits={"max_body_bytes": 1000})
    reader, writer = await connect(gw.port)
    try:
        writer.write(get("/public/x", "Transfer-Encoding: chunked", method="POST"))
        for _ in range(10):
            writer.write(b"200\r\n" + b"a" * 0x200 + b"\r\n")
        answer = await closed_by_peer(reader)
    finally:
        writer.close()
    assert answer.startswith(b"HTTP/1.1 413 ")


async def test_idle_keepalive_is_reclaimed_before_anyone_is_refused(
    gateway_factory: GatewayFactory,
) -> None:
    """At max_connections an idle kept-alive connection is closed so a new client is served."""
    gw = await gateway_factory(limits={"max_connections": 16})
    async with held(gw.port, 16) as idle:
        for reader, writer in idle:
            writer.write(get("/public/warm"))
            assert (await read_response(reader)).status == 200
        response = await exchange(gw.port, get("/public/new"))
        assert response.status == 200
        closed = [r for r, _ in idle if r.at_eof() or await _eof_soon(r)]
        assert len(closed) >= 1


async def _eof_soon(reader: asyncio.StreamReader) -> bool:
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(0.5):
            return await reader.read() == b""
    return False


async def test_busy_connections_at_the_cap_refuse_the_new_one(
    gateway_factory: GatewayFactory,
) -> None:
    """At max_connections with none idle, a new connection is closed without an answer."""
    gw = await gateway_factory(limits={"max_connections": 16, "header_timeout": 30})
    async with held(gw.port, 16, b"GET /public/x HTTP/1.1\r\n"):
        reader, writer = await connect(gw.port)
        try:
            assert await closed_by_peer(reader) == b""
        finally:
            writer.close()
    assert await refusals(gw, "max_connections") >= 1


async def test_per_ip_cap_closes_only_that_address(gateway_factory: GatewayFactory) -> None:
    """Beyond max_connections_per_ip one address is refused; another address is served."""
    gw = await gateway_factory(limits={"max_connections_per_ip": 3, "header_timeout": 30})
    async with held(gw.port, 3, b"GET /public/x HTTP/1.1\r\n", source="127.0.0.1"):
        reader, writer = await connect(gw.port, source="127.0.0.1")
        try:
            assert await closed_by_peer(reader) == b""
        finally:
            writer.close()
        reader, writer = await connect(gw.port, source="127.0.0.2")
        try:
            writer.write(get("/public/other"))
            assert (await read_response(reader)).status == 200
        finally:
            writer.close()
    assert await refusals(gw, "per_ip") >= 1


async def test_overload_sheds_all_but_cached_sessions(gateway_factory: GatewayFactory) -> None:
    """With the event loop lagging, cached sessions are served and the rest shed with 503."""
    gw = await gateway_factory(limits={"overload_lag": 0.1})
    signed_in = f"Cookie: session={GOOD}"
    assert (await exchange(gw.port, get("/dashboard", signed_in))).status == 200

    async def block_the_loop() -> None:
        while True:
            time.sleep(0.15)
            await asyncio.sleep(0)

    blocker = asyncio.ensure_future(block_the_loop())
    try:
        load = gw.running.gateway.load
        assert load is not None
        await eventually(lambda: load.overloaded, deadline=DEADLINE)
        cached = await exchange(gw.port, get("/dashboard", signed_in))
        unknown = await exchange(gw.port, get("/dashboard", "Cookie: session=never-seen-0001"))
        anonymous = await exchange(gw.port, get("/public/page"))
    finally:
        blocker.cancel()
    assert cached.status == 200
    assert (unknown.status, anonymous.status) == (503, 503)
    assert unknown.header("Retry-After") == "1"
    assert await refusals(gw, "shed", outcome=True) >= 2


async def refusals(gw: Gw, kind: str, *, outcome: bool = False) -> float:
    """A refusal count from the gateway's metrics (`outcome`: requests by auth outcome)."""
    text = gw.running.metrics.exposition().decode()
    if outcome:
        pattern = rf'^gateway_requests_total\{{[^}}]*auth="{kind}"[^}}]*\}} (\S+)$'
    else:
        pattern = rf'^gateway_refusals_total\{{kind="{kind}"\}} (\S+)$'
    return sum(float(m.group(1)) for m in re.finditer(pattern, text, re.MULTILINE))


async def test_descriptor_exhaustion_is_survived(
    tmp_path: Path, frontend: Backend, auth_api: Backend
) -> None:
    """With RLIMIT_NOFILE at 800, 300 held half-requests are capped; clients are served after."""
    port, admin = free_port(), free_port()
    data = yaml.safe_load(config_text(frontend, auth_api))
    data.update(
        listen=f"127.0.0.1:{port}",
        admin_listen=f"127.0.0.1:{admin}",
        limits={"max_connections_per_ip": 100_000, "header_timeout": 60},
    )
    config = tmp_path / "gw.yaml"
    config.write_text(yaml.safe_dump(data))
    process = GatewayProcess(config, tmp_path / "out.log", nofile=800)
    try:
        await wait_for_port(port)
        await process.wait_for_output("lowered to fit RLIMIT_NOFILE")
        cpu_before = _cpu_seconds(process.proc.pid)
        async with held(port, 300, b"GET /public/x HTTP/1.1\r\n"):
            await asyncio.sleep(1.5)
            assert process.proc.poll() is None
        assert _cpu_seconds(process.proc.pid) - cpu_before < 1.0
        assert await served_within(port, DEADLINE)
        await process.wait_for_output("connections refused or cut")
        summaries = process.output.count("connections refused or cut")
        assert 1 <= summaries <= 5
    finally:
        process.kill()


async def served_within(port: int, deadline: float) -> bool:
    """Whether a new client is served before the deadline (the gateway sees closes late)."""
    async with asyncio.timeout(deadline):
        while True:
            with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
                if (await exchange(port, get("/public/after"))).status == 200:
                    return True
            await asyncio.sleep(0.1)


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / 100
