"""1 GiB download and 1 GiB upload through the gateway, beside nginx as a plain reverse proxy.

    .venv/bin/python bench/stream.py               # 3 rounds, results/stream-<ts>.md
    .venv/bin/python bench/stream.py --reps 1 --size-mib 256

All on 127.0.0.1. Pieces (each its own process):
  origin  nginx (1 worker, sendfile) serving a sparse file of --size-mib (zeros, no disk reads)
  sink    aiohttp + uvloop server (this file with --sink PORT): reads any body and throws it away,
          answering with the byte count
  nginx   nginx (1 worker) as a plain reverse proxy: proxy_buffering off (and a 64k-buffer twin),
          proxy_request_buffering off, keepalive to origin and sink
  gateway hamrah-gateway, workers: 1, protect [/] with a session the gateway has cached (one
          warm-up request first), /upload routed to the sink, JSON access log to a file
and a tiny aiohttp auth API stub in this process. The client is curl (`-o /dev/null` for the
download, `-T <sparse file>` for the upload: neither holds the body in memory). Each round moves
the body directly (origin or sink: the ceiling), through nginx, and through the gateway.

While a transfer runs through the gateway (and nginx), VmRSS of its processes is sampled every
10 ms; VmHWM (the kernel's peak) is read after. CPU is utime+stime of the proxy's processes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import shutil
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web
from gwbench import (
    LOOPBACK,
    RESULTS,
    children,
    cpu_seconds,
    free_port,
    log,
    machine_info,
    start_gateway,
    status_kib,
    stop_gateway,
    write_report,
)

COOKIE = "session=STREAMTOKEN"
NAMES = ("direct", "nginx", "nginx-64k", "gateway")
NGINX_COMMON = """worker_processes 1;
pid nginx.pid;
error_log error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    server_tokens off;
    client_body_temp_path tmp/body;
    proxy_temp_path tmp/proxy;
    fastcgi_temp_path tmp/fastcgi;
    uwsgi_temp_path tmp/uwsgi;
    scgi_temp_path tmp/scgi;
{body}
}}
"""
ORIGIN_BODY = """    sendfile on;
    tcp_nopush on;
    server {{
        listen {host}:{port};
        root {root};
        location / {{ }}
    }}"""
PROXY_BODY = """    upstream origin {{ server {host}:{origin}; keepalive 16; }}
    upstream sink {{ server {host}:{sink}; keepalive 16; }}
    server {{
        listen {host}:{port};
        client_max_body_size 0;
        proxy_http_version 1.1;
        proxy_set_header Connection "";
        proxy_buffering off;
        proxy_request_buffering off;
        location /upload {{ proxy_pass http://sink; }}
        location / {{ proxy_pass http://origin; }}
    }}
    server {{
        listen {host}:{port64};
        client_max_body_size 0;
        client_body_buffer_size 64k;
        proxy_http_version 1.1;
        proxy_set_header Connection "";
        proxy_buffering off;
        proxy_request_buffering off;
        proxy_buffer_size 64k;
        proxy_buffers 8 64k;
        proxy_busy_buffers_size 128k;
        location /upload {{ proxy_pass http://sink; }}
        location / {{ proxy_pass http://origin; }}
    }}"""


# ------------------------------------------------------------------------------- the sink process
async def sink_handler(request: web.Request) -> web.Response:
    received = 0
    while chunk := await request.content.readany():
        received += len(chunk)
    return web.json_response({"received": received})


def run_sink(port: int) -> None:
    import uvloop

    app = web.Application(client_max_size=0)
    app.router.add_route("*", "/{tail:.*}", sink_handler)
    uvloop.install()
    web.run_app(app, host=LOOPBACK, port=port, access_log=None, print=None)


# ------------------------------------------------------------------------------- orchestration
async def auth_ok(request: web.Request) -> web.Response:
    if request.cookies.get("session") != "STREAMTOKEN":
        return web.json_response({"error": "invalid"}, status=401)
    return web.json_response({"user_id": "u1", "email": "a@example.test"})


@dataclass
class Transfer:
    target: str
    direction: str
    seconds: float
    nbytes: int
    cpu: float = 0.0
    peak_rss_kib: int = 0
    hwm_kib: int = 0

    @property
    def mb_s(self) -> float:
        return self.nbytes / self.seconds / 1e6


@dataclass
class Proxy:
    name: str
    url: str
    pids: list[int] = field(default_factory=list)


async def wait_http(url: str, deadline: float = 10.0) -> None:
    until = time.monotonic() + deadline
    while True:
        proc = await asyncio.create_subprocess_exec(
            "curl", "-s", "-o", "/dev/null", "--max-time", "1", url
        )
        if await proc.wait() == 0:
            return
        if time.monotonic() > until:
            raise RuntimeError(f"{url} did not answer within {deadline} s")
        await asyncio.sleep(0.1)


async def curl(args: list[str]) -> str:
    proc = await asyncio.create_subprocess_exec(
        "curl", "-sS", *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"curl {' '.join(args)} failed: {err.decode().strip()}")
    return out.decode()


async def sample_rss(pids: list[int], peak: list[int], stop: asyncio.Event) -> None:
    while not stop.is_set():
        peak[0] = max(peak[0], sum(status_kib(p, "VmRSS") for p in pids))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.01)


async def transfer(proxy: Proxy, direction: str, blob: Path, size: int, scratch: Path) -> Transfer:
    reply = scratch / "reply.json"
    if direction == "download":
        args = ["-o", "/dev/null", "-w", "%{http_code} %{size_download} %{time_total}"]
        args += ["-H", f"Cookie: {COOKIE}", f"{proxy.url}/{blob.name}"]
    else:
        args = ["-o", str(reply), "-w", "%{http_code} %{size_upload} %{time_total}"]
        args += ["-T", str(blob), "-H", f"Cookie: {COOKIE}", f"{proxy.url}/upload"]
    cpu0 = sum(cpu_seconds(p) for p in proxy.pids)
    peak = [0]
    stop = asyncio.Event()
    sampler = asyncio.create_task(sample_rss(proxy.pids, peak, stop)) if proxy.pids else None
    out = await curl(args)
    stop.set()
    if sampler is not None:
        await sampler
    cpu = sum(cpu_seconds(p) for p in proxy.pids) - cpu0
    status, nbytes, seconds = out.split()
    if status != "200" or int(nbytes) != size:
        raise RuntimeError(f"{proxy.name} {direction}: status {status}, {nbytes} bytes")
    if direction == "upload":
        received = json.loads(reply.read_text())["received"]
        if received != size:
            raise RuntimeError(f"{proxy.name} upload: the sink received {received} bytes")
    hwm = sum(status_kib(p, "VmHWM") for p in proxy.pids)
    return Transfer(proxy.name, direction, float(seconds), size, cpu, peak[0], hwm)


async def start_nginx(prefix: Path, body: str) -> asyncio.subprocess.Process:
    (prefix / "tmp").mkdir(parents=True, exist_ok=True)
    conf = prefix / "nginx.conf"
    conf.write_text(NGINX_COMMON.format(body=body))
    return await asyncio.create_subprocess_exec(
        "nginx", "-p", f"{prefix}/", "-c", str(conf), "-e", str(prefix / "error.log"),
        "-g", "daemon off;",
    )  # fmt: skip


async def stop_process(proc: asyncio.subprocess.Process, name: str) -> None:
    if proc.returncode is not None:
        return
    proc.terminate()
    try:
        await asyncio.wait_for(proc.wait(), 10)
    except TimeoutError:
        log(f"{name} pid {proc.pid} did not stop; KILL")
        proc.kill()
        await proc.wait()


async def run(args: argparse.Namespace) -> str:
    if shutil.which("nginx") is None:
        raise SystemExit("nginx is needed: apt-get install nginx (bench/run.sh's harness does)")
    scratch = RESULTS / "stream"
    scratch.mkdir(parents=True, exist_ok=True)
    www = scratch / "www"
    www.mkdir(exist_ok=True)
    size = args.size_mib * 1024 * 1024
    blob = www / f"blob-{args.size_mib}m"
    with open(blob, "wb") as handle:  # noqa: ASYNC230 - once, before anything runs
        handle.truncate(size)  # sparse: zeros from the page cache, no disk I/O, no memory
    ports = {
        name: free_port() for name in ("origin", "sink", "nginx", "nginx64", "gw", "admin", "auth")
    }

    auth_app = web.Application()
    auth_app.router.add_get("/api/auth/sessions/validate", auth_ok)
    auth_runner = web.AppRunner(auth_app, access_log=None)
    await auth_runner.setup()
    await web.TCPSite(auth_runner, LOOPBACK, ports["auth"]).start()

    procs: list[tuple[str, asyncio.subprocess.Process]] = []
    gateway = None
    transfers: list[Transfer] = []
    try:
        origin = await start_nginx(
            scratch / "origin",
            ORIGIN_BODY.format(host=LOOPBACK, port=ports["origin"], root=www),
        )
        procs.append(("origin nginx", origin))
        sink = await asyncio.create_subprocess_exec(
            sys.executable, __file__, "--sink", str(ports["sink"])
        )
        procs.append(("sink", sink))
        nginx = await start_nginx(
            scratch / "proxy",
            PROXY_BODY.format(
                host=LOOPBACK,
                port=ports["nginx"],
                port64=ports["nginx64"],
                origin=ports["origin"],
                sink=ports["sink"],
            ),
        )
        procs.append(("proxy nginx", nginx))
        for name in ("origin", "sink", "nginx"):
            await wait_http(f"http://{LOOPBACK}:{ports[name]}/")
        gateway = await start_gateway(
            scratch,
            "gateway",
            upstream=f"http://{LOOPBACK}:{ports['origin']}",
            validate_url=f"http://{LOOPBACK}:{ports['auth']}/api/auth/sessions/validate",
            routes={"/upload": f"http://{LOOPBACK}:{ports['sink']}"},
            port=ports["gw"],
            admin_port=ports["admin"],
        )
        # Warm the validation cache: every measured request is a cached, protected request.
        await curl(["-o", "/dev/null", "-H", f"Cookie: {COOKIE}", f"{gateway.url}/upload"])
        idle_rss = status_kib(gateway.pid, "VmRSS")
        idle_hwm = status_kib(gateway.pid, "VmHWM")
        nginx_pids = [nginx.pid, *children(nginx.pid)]
        proxies = {
            "direct": Proxy("direct", ""),
            "nginx": Proxy("nginx", f"http://{LOOPBACK}:{ports['nginx']}", nginx_pids),
            "nginx-64k": Proxy("nginx-64k", f"http://{LOOPBACK}:{ports['nginx64']}", nginx_pids),
            "gateway": Proxy("gateway", gateway.url, [gateway.pid]),
        }
        for rep in range(args.reps):
            for direction in ("download", "upload"):
                direct = (
                    f"http://{LOOPBACK}:{ports['origin' if direction == 'download' else 'sink']}"
                )
                proxies["direct"].url = direct
                for name in NAMES:
                    result = await transfer(proxies[name], direction, blob, size, scratch)
                    transfers.append(result)
                    log(
                        f"r{rep + 1} {direction:8} {name:7} {result.mb_s:7.0f} MB/s"
                        f"  cpu {result.cpu:5.2f} s  peak rss {result.peak_rss_kib / 1024:6.1f} MiB"
                    )
        end_hwm = status_kib(gateway.pid, "VmHWM")
    finally:
        if gateway is not None:
            await stop_gateway(gateway)
        for name, proc in reversed(procs):
            await stop_process(proc, name)
        await auth_runner.cleanup()
        if not args.keep_blob:
            blob.unlink(missing_ok=True)

    lines = [
        f"# Streaming {args.size_mib} MiB through the gateway and through nginx",
        "",
        f"- machine: {machine_info()}",
        f"- {args.reps} rounds; curl client on 127.0.0.1; MB/s = 10^6 bytes/s, median (min-max);"
        " CPU = utime+stime of the proxy's processes (nginx: master + 1 worker; gateway: the one"
        " process) during the transfer",
        "- download: nginx origin (sendfile, sparse file); upload: `curl -T` (Content-Length,"
        " Expect: 100-continue) to an aiohttp+uvloop sink that discards the body",
        "- gateway: workers 1, protected path, cached session, JSON access log to a file;"
        " nginx: proxy_buffering off, proxy_request_buffering off (buffers at their defaults:"
        " proxy_buffer_size 4k|8k, client_body_buffer_size 8k|16k); nginx-64k: the same with"
        " proxy_buffer_size 64k (proxy_buffers 8 64k) and client_body_buffer_size 64k",
        f"- gateway RSS idle (after the warm-up request) {idle_rss / 1024:.1f} MiB, VmHWM before"
        f" the transfers {idle_hwm / 1024:.1f} MiB, VmHWM after all {end_hwm / 1024:.1f} MiB",
        "",
        "| direction | path | MB/s | vs nginx | CPU s per GiB | peak VmRSS sampled, MiB |",
        "|---|---|---|---|---|---|",
    ]
    for direction in ("download", "upload"):
        nginx_mb = statistics.median(
            t.mb_s for t in transfers if t.direction == direction and t.target == "nginx"
        )
        for name in NAMES:
            rows = [t for t in transfers if t.direction == direction and t.target == name]
            speeds = [t.mb_s for t in rows]
            med = statistics.median(speeds)
            cpu = statistics.median(t.cpu for t in rows) * (1024**3 / size)
            peak = max(t.peak_rss_kib for t in rows) / 1024
            lines.append(
                f"| {direction} | {name} | {med:.0f} ({min(speeds):.0f}-{max(speeds):.0f})"
                f" | {100 * med / nginx_mb:.0f}% | {'-' if name == 'direct' else f'{cpu:.2f}'}"
                f" | {'-' if name == 'direct' else f'{peak:.1f}'} |"
            )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description="1 GiB through the gateway and through nginx")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--keep-blob", action="store_true", help="keep the sparse file")
    parser.add_argument("--sink", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.sink is not None:
        run_sink(args.sink)
        return
    write_report("stream", asyncio.run(run(args)))


if __name__ == "__main__":
    main()
