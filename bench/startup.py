"""Start-up time and idle memory of the gateway.

    .venv/bin/python bench/startup.py                 # 5 runs each for workers 1 and 2
    .venv/bin/python bench/startup.py --runs 10 --workers 1

Each run starts `.venv/bin/hamrah-gateway --config ...` (upstream and auth API are tiny aiohttp
stubs in this process, so /readyz can pass) and polls every 5 ms: the time until the listen port
accepts a TCP connection (with workers: N, until N processes listen), and until admin /readyz
answers 200. One second after ready it reads VmRSS of every gateway process, then stops it.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import statistics
import time

import aiohttp
from aiohttp import web
from gwbench import (
    LOOPBACK,
    RESULTS,
    free_port,
    listening_pids,
    log,
    machine_info,
    start_gateway,
    status_kib,
    stop_gateway,
    write_report,
)

POLL = 0.005


async def ok(request: web.Request) -> web.Response:
    return web.json_response({"user_id": "u1"})


def accepts(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((LOOPBACK, port)) == 0


async def one_run(workers: int, stub_port: int, index: int) -> tuple[float, float, int, int]:
    """(seconds to port, seconds to /readyz 200, idle RSS KiB total, idle RSS KiB per worker)."""
    out_dir = RESULTS / "startup"
    out_dir.mkdir(parents=True, exist_ok=True)
    stub = f"http://{LOOPBACK}:{stub_port}"
    gateway = await start_gateway(
        out_dir,
        f"gateway-w{workers}",
        upstream=stub,
        validate_url=f"{stub}/api/auth/sessions/validate",
        workers=workers,
        wait_ready=False,
    )
    t_port = t_ready = -1.0
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=1)) as client:
            deadline = time.perf_counter() + 30
            while t_port < 0 or t_ready < 0:
                if gateway.proc.returncode is not None or time.perf_counter() > deadline:
                    raise RuntimeError(f"run {index}: gateway did not become ready")
                if (
                    t_port < 0
                    and accepts(gateway.port)
                    and (workers == 1 or len(listening_pids(gateway.port)) >= workers)
                ):
                    t_port = time.perf_counter() - gateway.started
                if t_ready < 0:
                    try:
                        async with client.get(
                            f"http://{LOOPBACK}:{gateway.admin_port}/readyz"
                        ) as r:
                            if r.status == 200:
                                t_ready = time.perf_counter() - gateway.started
                    except (aiohttp.ClientError, TimeoutError):
                        pass
                await asyncio.sleep(POLL)
        await asyncio.sleep(1.0)
        total = gateway.rss_kib()
        per_worker = max(status_kib(p, "VmRSS") for p in gateway.worker_pids())
    finally:
        await stop_gateway(gateway)
    return t_port, t_ready, total, per_worker


async def run(args: argparse.Namespace) -> str:
    app = web.Application()
    app.router.add_get("/{tail:.*}", ok)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    stub_port = free_port()
    await web.TCPSite(runner, LOOPBACK, stub_port).start()
    lines = [
        "# Gateway start-up time and idle RSS",
        "",
        f"- machine: {machine_info()}",
        f"- {args.runs} runs per row; time from spawning `.venv/bin/hamrah-gateway --config` to the"
        " listen port accepting (all N workers listening) and to admin /readyz 200; VmRSS 1 s"
        " after ready",
        "",
        "| workers | to port accepting, ms: median (min-max) | to /readyz 200, ms: median"
        " (min-max) | idle RSS all processes, MiB | idle RSS largest worker, MiB | runs (port"
        " / ready ms) |",
        "|---|---|---|---|---|---|",
    ]
    try:
        for workers in args.workers:
            results = []
            for index in range(args.runs):
                result = await one_run(workers, stub_port, index)
                log(
                    f"workers {workers} run {index + 1}: port {result[0] * 1000:.0f} ms,"
                    f" ready {result[1] * 1000:.0f} ms, rss {result[2] / 1024:.1f} MiB"
                )
                results.append(result)
            ports = [r[0] * 1000 for r in results]
            readies = [r[1] * 1000 for r in results]
            rss = [r[2] / 1024 for r in results]
            worker_rss = [r[3] / 1024 for r in results]
            runs = ", ".join(f"{p:.0f}/{q:.0f}" for p, q in zip(ports, readies, strict=True))
            lines.append(
                f"| {workers} | {statistics.median(ports):.0f} ({min(ports):.0f}-{max(ports):.0f})"
                f" | {statistics.median(readies):.0f} ({min(readies):.0f}-{max(readies):.0f})"
                f" | {statistics.median(rss):.1f} | {statistics.median(worker_rss):.1f}"
                f" | {runs} |"
            )
    finally:
        await runner.cleanup()
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description="gateway start-up time and idle RSS")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    write_report("startup", asyncio.run(run(args)))


if __name__ == "__main__":
    main()
