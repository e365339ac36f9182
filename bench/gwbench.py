"""Shared pieces of the bench scripts: free loopback ports, gateway configs, starting and stopping
the gateway as a real process (`.venv/bin/hamrah-gateway --config ...`), and /proc readings.

Everything here binds and connects to 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import os
import platform
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import aiohttp

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
RESULTS = BENCH / "results"
GATEWAY_BIN = ROOT / ".venv" / "bin" / "hamrah-gateway"
LOOPBACK = "127.0.0.1"
CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    """A port nothing listens on right now (bound and released: a small race, fine on loopback)."""
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def gateway_yaml(
    *,
    port: int,
    admin_port: int,
    upstream: str,
    validate_url: str,
    workers: int = 1,
    routes: dict[str, str] | None = None,
    log_level: str = "info",
    policy: bool = False,
    assertion_key: str | None = None,
    auth: Mapping[str, float] | None = None,
) -> str:
    """A config with every feature on: protect [/], JSON access log, admin listener.

    `policy` also configures a `require` rule, an optional prefix and a stripping route beside
    the measured path, to check that they cost the cached path nothing measurable.
    `assertion_key` (a PEM file) turns the signed identity on, to measure its cost. `auth` adds
    keys of the auth section (cache_ttl, stale_if_error ...).
    """
    lines = [
        f"listen: {LOOPBACK}:{port}",
        f"admin_listen: {LOOPBACK}:{admin_port}",
        f"workers: {workers}",
        f"upstream: {upstream}",
        "auth:",
        f"  validate_url: {validate_url}",
        "  cookie: session",
        *(f"  {key}: {value}" for key, value in (auth or {}).items()),
        "  identity_headers:",
        "    X-Auth-User-Id: user_id",
        "    X-Auth-User-Email: email",
        "protect:",
        "  - /",
    ]
    if policy:
        lines += ["  - prefix: /admin", "    require:", "      roles: {contains: admin}"]
        lines += ["optional: [/pricing]"]
    lines += ["public:", "  - /login", "log:", f"  level: {log_level}", "  format: json"]
    if assertion_key is not None:
        lines += ["assertion:", f"  keys: [{assertion_key}]", "  claims: {sub: user_id}"]
    route_lines = []
    for prefix, url in (routes or {}).items():
        route_lines += [f"  - prefix: {prefix}", f"    upstream: {url}"]
    if policy:
        route_lines += ["  - prefix: /api", f"    upstream: {upstream}", "    strip_prefix: true"]
    if route_lines:
        lines += ["routes:", *route_lines]
    return "\n".join(lines) + "\n"


def listening_pids(port: int) -> set[int]:
    """Pids holding a listening TCP socket on the port (several with SO_REUSEPORT workers)."""
    out = subprocess.run(
        ["ss", "-Hltnp", f"sport = :{port}"], capture_output=True, text=True, check=False
    ).stdout
    pids = set()
    for part in out.split("pid=")[1:]:
        digits = part.split(",", 1)[0]
        if digits.isdigit():
            pids.add(int(digits))
    return pids


def children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


def status_kib(pid: int, field: str) -> int:
    """A kB field of /proc/<pid>/status (VmRSS, VmHWM); 0 when the process is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, in seconds."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat.rpartition(") ")[2].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def code_revision() -> str:
    """The gateway code a process starting now runs: the commit, and a digest of any uncommitted
    change under gateway/ (others may be editing it while a benchmark runs)."""
    rev = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    diff = subprocess.run(
        ["git", "-C", str(ROOT), "diff", "HEAD", "--", "gateway"],
        capture_output=True,
        check=False,
    ).stdout
    dirty = (
        f" + uncommitted changes in gateway/ (diff {hashlib.sha1(diff).hexdigest()[:8]})"
        if diff
        else ""
    )
    return f"{rev or '?'}{dirty}"


def machine_info() -> str:
    model = "?"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    load = Path("/proc/loadavg").read_text().split()[:3]
    return (
        f"{time.strftime('%Y-%m-%dT%H:%M:%S%z')}, nproc {os.cpu_count()}, {model}, "
        f"kernel {platform.release()}, python {platform.python_version()}, "
        f"aiohttp {aiohttp.__version__}, load {' '.join(load)}, gateway code {code_revision()}"
    )


@dataclass
class Gateway:
    """A gateway process started from a config file."""

    proc: asyncio.subprocess.Process
    port: int
    admin_port: int
    workers: int
    started: float

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def worker_pids(self) -> list[int]:
        """The processes serving requests: the process itself, or its N workers."""
        return [self.pid] if self.workers == 1 else children(self.pid)

    def rss_kib(self) -> int:
        """VmRSS of every gateway process (supervisor included)."""
        pids = [self.pid, *([] if self.workers == 1 else children(self.pid))]
        return sum(status_kib(p, "VmRSS") for p in pids)


def _open_log(path: Path) -> BinaryIO:
    """The file the gateway's stdout and stderr are appended to."""
    return open(path, "ab")


async def start_gateway(
    out_dir: Path,
    name: str,
    *,
    upstream: str,
    validate_url: str,
    workers: int = 1,
    routes: dict[str, str] | None = None,
    auth: Mapping[str, float] | None = None,
    port: int | None = None,
    admin_port: int | None = None,
    wait_ready: bool = True,
    deadline: float = 30.0,
) -> Gateway:
    """Write the bench config (out_dir/name.yaml; free ports unless given), start the gateway
    with its output in out_dir/name.log, and (by default) wait until it serves."""
    port = port if port is not None else free_port()
    admin_port = admin_port if admin_port is not None else free_port()
    config_path = out_dir / f"{name}.yaml"
    config_path.write_text(
        gateway_yaml(
            port=port,
            admin_port=admin_port,
            upstream=upstream,
            validate_url=validate_url,
            workers=workers,
            routes=routes,
            auth=auth,
        )
    )
    with _open_log(out_dir / f"{name}.log") as log:
        started = time.perf_counter()
        proc = await asyncio.create_subprocess_exec(
            str(GATEWAY_BIN),
            "--config",
            str(config_path),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
        )
    gateway = Gateway(proc, port, admin_port, workers, started)
    if wait_ready:
        await wait_until_ready(gateway, deadline)
    return gateway


async def wait_until_ready(gateway: Gateway, deadline: float = 30.0) -> None:
    """Admin /readyz answers 200 and every worker listens, polled until the deadline."""
    until = time.monotonic() + deadline
    timeout = aiohttp.ClientTimeout(total=1)
    async with aiohttp.ClientSession(timeout=timeout) as client:
        while True:
            if gateway.proc.returncode is not None:
                raise RuntimeError(f"gateway exited with {gateway.proc.returncode} during start")
            try:
                url = f"http://{LOOPBACK}:{gateway.admin_port}/readyz"
                async with client.get(url) as response:
                    ready = response.status == 200
            except (aiohttp.ClientError, TimeoutError):
                ready = False
            if ready and len(listening_pids(gateway.port)) >= gateway.workers:
                return
            if time.monotonic() > until:
                raise RuntimeError(f"gateway not ready within {deadline} s")
            await asyncio.sleep(0.05)


async def stop_gateway(gateway: Gateway, grace: float = 20.0) -> None:
    """SIGTERM (the supervisor stops its workers), then KILL the pid and its children."""
    if gateway.proc.returncode is not None:
        return
    kids = children(gateway.pid)
    gateway.proc.send_signal(signal.SIGTERM)
    try:
        await asyncio.wait_for(gateway.proc.wait(), grace)
    except TimeoutError:
        for pid in [gateway.pid, *kids]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        await gateway.proc.wait()


def write_report(kind: str, report: str, out: Path | None = None) -> None:
    """Print a report and keep it as results/<kind>-<timestamp>.md (or `out`)."""
    out = out or RESULTS / f"{kind}-{time.strftime('%Y%m%d-%H%M%S')}.md"
    out.write_text(report)
    print(report)
    print(f"written: {out}")


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def main() -> None:
    """For the shell scripts: `config ...` prints a bench config, `revision` the code revision."""
    parser = argparse.ArgumentParser(description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("revision")
    config = commands.add_parser("config")
    config.add_argument("--port", type=int, required=True)
    config.add_argument("--admin-port", type=int, required=True)
    config.add_argument("--upstream", required=True)
    config.add_argument("--validate-url", required=True)
    config.add_argument("--workers", type=int, default=1)
    config.add_argument("--log-level", default="info")
    config.add_argument("--policy", action="store_true")
    config.add_argument("--assertion-key", help="a PEM key: sign the identity (assertion on)")
    args = parser.parse_args()
    if args.command == "revision":
        print(code_revision())
        return
    print(
        gateway_yaml(
            port=args.port,
            admin_port=args.admin_port,
            upstream=args.upstream,
            validate_url=args.validate_url,
            workers=args.workers,
            log_level=args.log_level,
            policy=args.policy,
            assertion_key=args.assertion_key,
        ),
        end="",
    )


if __name__ == "__main__":
    main()
