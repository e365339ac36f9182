"""How many auth API calls the gateway makes: a burst with one new cookie, and steady state.

    .venv/bin/python bench/burst.py                       # workers 1 and 2, results/burst-<ts>.md
    .venv/bin/python bench/burst.py --workers 1 --steady 20000

An aiohttp auth API stub (counts calls per cookie, answers after --auth-delay) and a tiny upstream
run in this process on 127.0.0.1; the gateway runs as a real process (`hamrah-gateway --config`).

1. Burst: --burst (50) requests at once, each on its own new connection, all with one cookie the
   gateway has never seen; repeated --rounds times with a fresh cookie. Expect 1 auth call per
   burst with workers: 1 (single flight, then the cache); with workers: N each process has its own
   cache and single flight, so up to N.
2. Steady state: --steady requests over --concurrency keepalive connections with one cookie.
   Expect <= 1 auth call per 1000 requests (only the first one validates).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import statistics
import time
import uuid
from pathlib import Path

import aiohttp
from aiohttp import web
from gwbench import (
    LOOPBACK,
    RESULTS,
    Gateway,
    free_port,
    log,
    machine_info,
    start_gateway,
    stop_gateway,
    write_report,
)


class AuthStub:
    """GET /validate: 200 + JSON for any non-empty session cookie, after `delay`; counts calls."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.calls: collections.Counter[str] = collections.Counter()

    async def validate(self, request: web.Request) -> web.Response:
        session = request.cookies.get("session", "")
        self.calls[session] += 1
        if self.delay:
            await asyncio.sleep(self.delay)
        if not session:
            return web.json_response({"error": "no session"}, status=401)
        return web.json_response({"user_id": "u-" + session[:8], "email": "a@example.test"})


async def upstream_page(request: web.Request) -> web.Response:
    return web.Response(text="ok\n")


async def serve(app: web.Application) -> tuple[web.AppRunner, int]:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, LOOPBACK, port).start()
    return runner, port


async def burst(
    gateway: Gateway, stub: AuthStub, size: int
) -> tuple[int, collections.Counter[int]]:
    """`size` simultaneous requests, one fresh connection each, one new cookie: auth calls made."""
    cookie = f"burst-{uuid.uuid4().hex}"
    connector = aiohttp.TCPConnector(limit=0, force_close=True)
    statuses: collections.Counter[int] = collections.Counter()
    start = asyncio.Event()
    async with aiohttp.ClientSession(connector=connector) as client:

        async def one() -> None:
            await start.wait()
            async with client.get(
                f"{gateway.url}/page", headers={"Cookie": f"session={cookie}"}
            ) as response:
                await response.read()
                statuses[response.status] += 1

        tasks = [asyncio.create_task(one()) for _ in range(size)]
        await asyncio.sleep(0.05)
        start.set()
        await asyncio.gather(*tasks)
    return stub.calls[cookie], statuses


async def steady(
    gateway: Gateway, stub: AuthStub, total: int, concurrency: int
) -> tuple[int, float, collections.Counter[int]]:
    """`total` requests over `concurrency` keepalive connections, one cookie, from cold."""
    cookie = f"steady-{uuid.uuid4().hex}"
    statuses: collections.Counter[int] = collections.Counter()
    remaining = total
    connector = aiohttp.TCPConnector(limit=concurrency)
    started = time.perf_counter()
    async with aiohttp.ClientSession(connector=connector) as client:

        async def worker() -> None:
            nonlocal remaining
            while remaining > 0:
                remaining -= 1
                async with client.get(
                    f"{gateway.url}/page", headers={"Cookie": f"session={cookie}"}
                ) as response:
                    await response.read()
                    statuses[response.status] += 1

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return stub.calls[cookie], time.perf_counter() - started, statuses


async def run(args: argparse.Namespace) -> str:
    out_dir = RESULTS / "burst"
    out_dir.mkdir(parents=True, exist_ok=True)
    lines = [
        "# Auth calls: burst and steady state",
        "",
        f"- machine: {machine_info()}",
        f"- burst {args.burst} concurrent requests (new connection each, one new cookie) x"
        f" {args.rounds} rounds; steady {args.steady} requests over {args.concurrency}"
        f" keepalive connections; auth stub delay {args.auth_delay * 1000:.0f} ms",
        "- gateway: protect [/], cache_ttl 300 s (default), JSON access log to"
        " results/burst/gateway-wN.log",
        "",
        "| workers | burst: auth calls per round | burst statuses | expected |"
        " steady: requests | auth calls | calls /1000 req | req/s (client in-process) |"
        " steady statuses |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    stub = AuthStub(args.auth_delay)
    auth_app = web.Application()
    auth_app.router.add_get("/api/auth/sessions/validate", stub.validate)
    up_app = web.Application()
    up_app.router.add_get("/{tail:.*}", upstream_page)
    auth_runner, auth_port = await serve(auth_app)
    up_runner, up_port = await serve(up_app)
    try:
        for workers in args.workers:
            gateway = await start_gateway(
                out_dir,
                f"gateway-w{workers}",
                upstream=f"http://{LOOPBACK}:{up_port}",
                validate_url=f"http://{LOOPBACK}:{auth_port}/api/auth/sessions/validate",
                workers=workers,
            )
            try:
                counts: list[int] = []
                burst_statuses: collections.Counter[int] = collections.Counter()
                for _ in range(args.rounds):
                    calls, statuses = await burst(gateway, stub, args.burst)
                    counts.append(calls)
                    burst_statuses.update(statuses)
                log(f"workers {workers}: burst auth calls {counts}")
                calls, seconds, steady_statuses = await steady(
                    gateway, stub, args.steady, args.concurrency
                )
                log(f"workers {workers}: steady {args.steady} requests -> {calls} auth calls")
            finally:
                await stop_gateway(gateway)
            expected = "1" if workers == 1 else f"<= {workers} (one per worker)"
            lines.append(
                f"| {workers} | {', '.join(map(str, counts))} (median"
                f" {statistics.median(counts):g}) | {dict(burst_statuses)} | {expected} |"
                f" {args.steady} | {calls} | {1000 * calls / args.steady:.3f} |"
                f" {args.steady / seconds:.0f} | {dict(steady_statuses)} |"
            )
    finally:
        await up_runner.cleanup()
        await auth_runner.cleanup()
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--burst", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steady", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--auth-delay", type=float, default=0.05, help="seconds (default 0.05)")
    parser.add_argument("--out", type=Path, default=None, help="markdown file to write")
    args = parser.parse_args()
    write_report("burst", asyncio.run(run(args)), args.out)


if __name__ == "__main__":
    main()
