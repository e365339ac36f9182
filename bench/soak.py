"""A soak: signed-in users under steady load while the auth API goes through a schedule of faults.

    .venv/bin/python bench/soak.py --duration 180     # results/soak-<ts>.md; exit 1: a check failed
    .venv/bin/python bench/soak.py --duration 600 --cache-ttl 60 --faults refused,timeout,5xx

In this process: an auth API stub that follows the fault schedule, a tiny upstream, and the load
(--users signed-in cookies, --rate requests/s per gateway, round robin over the users, open loop:
a slow answer does not slow the schedule down). The gateways run as real processes
(`hamrah-gateway --config`, see gwbench.py), protect [/], with a cache_ttl short enough that each
outage spans a TTL boundary. Two gateways get the same load and faults side by side: one with
--stale-if-error, and a control with stale_if_error 0 (fail closed, as before issue 21), so the
figures of one run show what the setting changes.

The parts, so later issues can add to each: `schedule()` (the faults: refused connections, 5xx,
timeouts, when and how long), `Load` (the users and what they saw), `checks()` (what must hold at
the end):
- with stale_if_error >= the longest outage: zero 503 for signed-in users;
- the control saw 503s (else the schedule did not put a TTL boundary inside an outage, and the run
  proved nothing);
- every answer is 200 or 503 (a 302 would be a signed-in user sent to sign in), no client error;
- the stale gateway counted `stale` answers in /metrics and its /readyz named the auth API during
  each outage.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import re
import statistics
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, cast, get_args

import aiohttp
from aiohttp import web
from gwbench import (
    LOOPBACK,
    RESULTS,
    Gateway,
    log,
    machine_info,
    start_gateway,
    stop_gateway,
    write_report,
)

from gateway.demo_runner import serve_app

FaultKind = Literal["refused", "5xx", "timeout"]
# Requests waiting for an answer at once, per gateway; past it a scheduled request is dropped (and
# counted), so a hung gateway cannot make the load generator itself the bottleneck.
MAX_PENDING = 2000
CLIENT_TIMEOUT = 10.0
AUTH_TIMEOUT = 2.0
_REQUESTS = re.compile(r'gateway_requests_total\{auth="(\w+)",status_class="(\w+)"\} ([0-9.e+]+)')


@dataclass(frozen=True)
class Fault:
    """The auth API misbehaving from `at` for `length` seconds (from the start of the load)."""

    kind: FaultKind
    at: float
    length: float

    @property
    def end(self) -> float:
        return self.at + self.length

    def covers(self, t: float) -> bool:
        return self.at <= t < self.end


def schedule(duration: float, cache_ttl: float, kinds: Sequence[FaultKind]) -> list[Fault]:
    """One outage per kind, in order, each longer than cache_ttl so a TTL boundary falls inside
    it: the first from a quarter of the run for 30% of it, the others a tenth of the run apart
    for 15% of it each."""
    faults = [Fault(kinds[0], 0.25 * duration, max(0.3 * duration, 1.5 * cache_ttl))]
    for kind in kinds[1:]:
        start = faults[-1].end + 0.1 * duration
        faults.append(Fault(kind, start, max(0.15 * duration, 1.2 * cache_ttl)))
    if faults[-1].end > 0.95 * duration:
        raise SystemExit(
            f"--duration {duration:g} is too short for {len(kinds)} outages longer than"
            f" --cache-ttl {cache_ttl:g}: give a longer run, a shorter ttl or fewer --faults"
        )
    return faults


def fault_kinds(text: str) -> list[FaultKind]:
    """--faults: comma-separated kinds of outage."""
    kinds = text.split(",")
    unknown = [kind for kind in kinds if kind not in get_args(FaultKind)]
    if unknown or not kinds:
        raise argparse.ArgumentTypeError(f"unknown fault {unknown}: use {get_args(FaultKind)}")
    return [cast(FaultKind, kind) for kind in kinds]


class AuthStub:
    """The auth API on a fixed port: any `soak-` cookie is valid, unless a fault is on."""

    def __init__(self) -> None:
        # 0 until the first start picks a port; a restart after a refused outage reuses it.
        self.port = 0
        self.fault: FaultKind | None = None
        self.calls: collections.Counter[str] = collections.Counter()
        self._runner: web.AppRunner | None = None

    @property
    def validate_url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}/api/auth/sessions/validate"

    async def validate(self, request: web.Request) -> web.Response:
        session = request.cookies.get("session", "")
        self.calls[session.rpartition("-")[0]] += 1
        if self.fault == "timeout":
            await asyncio.sleep(2 * AUTH_TIMEOUT)
        if self.fault in ("5xx", "timeout"):
            return web.Response(status=503, text="down")
        if not session.startswith("soak-"):
            return web.json_response({"error": "no session"}, status=401)
        return web.json_response({"user_id": session, "email": f"{session}@example.test"})

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/api/auth/sessions/validate", self.validate)
        self._runner, self.port = await serve_app(app, LOOPBACK, self.port, shutdown_timeout=1.0)

    async def stop(self) -> None:
        """Close the listener and every connection: connections are refused until start()."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def apply(self, fault: Fault | None, previous: Fault | None) -> None:
        if previous is not None and previous.kind == "refused":
            await self.start()
        self.fault = None if fault is None else fault.kind
        if fault is not None and fault.kind == "refused":
            await self.stop()


@dataclass
class Load:
    """One gateway under the load of `users` signed-in users, and what they saw."""

    name: str
    gateway: Gateway
    stale_if_error: float
    users: Sequence[str]
    # (seconds since the start, status or "error", seconds to the answer)
    answers: list[tuple[float, int | str, float]] = field(default_factory=list)
    readyz: list[tuple[float, int, list[str]]] = field(default_factory=list)
    dropped: int = 0
    metrics: dict[str, float] = field(default_factory=dict)

    async def run(self, started: float, duration: float, rate: float) -> None:
        loop = asyncio.get_running_loop()
        pending: set[asyncio.Task[None]] = set()
        connector = aiohttp.TCPConnector(limit=0)
        timeout = aiohttp.ClientTimeout(total=CLIENT_TIMEOUT)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as client:
            n = 0
            while (now := loop.time()) < started + duration:
                due = started + n / rate
                if due > now:
                    await asyncio.sleep(due - now)
                if len(pending) < MAX_PENDING:
                    task = asyncio.create_task(
                        self._one(client, started, self.users[n % len(self.users)])
                    )
                    pending.add(task)
                    task.add_done_callback(pending.discard)
                else:
                    self.dropped += 1
                n += 1
            if pending:
                await asyncio.wait(pending)

    async def _one(self, client: aiohttp.ClientSession, started: float, cookie: str) -> None:
        loop = asyncio.get_running_loop()
        sent = loop.time()
        status: int | str
        try:
            async with client.get(
                f"{self.gateway.url}/page", headers={"Cookie": f"session={cookie}"}
            ) as response:
                await response.read()
                status = response.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            status = type(exc).__name__
        self.answers.append((sent - started, status, loop.time() - sent))

    async def sample_readyz(self, started: float) -> None:
        url = f"http://{LOOPBACK}:{self.gateway.admin_port}/readyz"
        async with aiohttp.ClientSession() as client, client.get(url) as response:
            body = await response.json()
        self.readyz.append(
            (asyncio.get_running_loop().time() - started, response.status, body["failing"])
        )

    async def read_metrics(self) -> None:
        url = f"http://{LOOPBACK}:{self.gateway.admin_port}/metrics"
        async with aiohttp.ClientSession() as client, client.get(url) as response:
            text = await response.text()
        for auth, status_class, value in _REQUESTS.findall(text):
            self.metrics[f"{auth} {status_class}"] = float(value)

    def statuses(self, faults: Sequence[Fault], during: bool) -> collections.Counter[int | str]:
        return collections.Counter(
            status for t, status, _ in self.answers if any(f.covers(t) for f in faults) == during
        )

    def latency_ms(self, faults: Sequence[Fault], during: bool) -> str:
        took = sorted(
            seconds for t, _, seconds in self.answers if any(f.covers(t) for f in faults) == during
        )
        if len(took) < 2:
            return "-"
        p99 = statistics.quantiles(took, n=100)[98]
        return f"{statistics.median(took) * 1000:.1f} / {p99 * 1000:.1f}"


async def run_faults(
    faults: Sequence[Fault], stub: AuthStub, loads: Sequence[Load], started: float, ttl: float
) -> None:
    """Apply each fault at its time, sample every gateway's /readyz once every session cached
    before it has expired, and clear it."""
    loop = asyncio.get_running_loop()
    for fault in faults:
        await asyncio.sleep(max(0.0, started + fault.at - loop.time()))
        log(f"fault on: {fault.kind} for {fault.length:g} s")
        await stub.apply(fault, None)
        sample_at = min(fault.at + ttl + 0.5, fault.end - 0.5)
        await asyncio.sleep(max(0.0, started + sample_at - loop.time()))
        await asyncio.gather(*(load.sample_readyz(started) for load in loads))
        await asyncio.sleep(max(0.0, started + fault.end - loop.time()))
        await stub.apply(None, fault)
        log(f"fault off: {fault.kind}")


def checks(loads: Sequence[Load], faults: Sequence[Fault]) -> list[tuple[bool, str]]:
    """What must hold at the end of the run, each with the sentence it is reported under."""
    longest = max(fault.length for fault in faults)
    results = []
    for load in loads:
        seen = load.statuses(faults, True) + load.statuses(faults, False)
        unexpected = {status: n for status, n in seen.items() if status not in (200, 503)}
        results.append(
            (
                not unexpected and not load.dropped,
                f"{load.name}: every answer 200 or 503, none dropped"
                f" (other: {unexpected or 'none'}, dropped {load.dropped})",
            )
        )
        if load.stale_if_error >= longest:
            results.append(
                (
                    seen[503] == 0,
                    f"{load.name}: zero 503 for signed-in users with stale_if_error"
                    f" {load.stale_if_error:g} >= the longest outage {longest:g} s"
                    f" (got {seen[503]})",
                )
            )
            stale = sum(v for k, v in load.metrics.items() if k.startswith("stale "))
            results.append((stale > 0, f"{load.name}: /metrics counted {stale:g} stale answers"))
            named = all(
                status == 503 and "auth_api" in failing for _, status, failing in load.readyz
            )
            results.append(
                (
                    named and bool(load.readyz),
                    f"{load.name}: /readyz named auth_api in every outage, past a ttl"
                    f" {[(round(t), status, failing) for t, status, failing in load.readyz]}",
                )
            )
        elif load.stale_if_error == 0:
            results.append(
                (
                    seen[503] > 0,
                    f"{load.name}: the control (fail closed) saw {seen[503]} 503s, so an outage did"
                    " span a TTL boundary",
                )
            )
    return results


async def run(args: argparse.Namespace) -> tuple[str, bool]:
    out_dir = RESULTS / "soak"
    out_dir.mkdir(parents=True, exist_ok=True)
    faults = schedule(args.duration, args.cache_ttl, args.faults)
    stub = AuthStub()
    await stub.start()
    upstream = web.Application()
    upstream.router.add_get("/{tail:.*}", _ok)
    up_runner, up_port = await serve_app(upstream, LOOPBACK)
    variants = [("stale", args.stale_if_error)] + ([] if args.no_control else [("control", 0.0)])
    loads: list[Load] = []
    try:
        for name, stale in variants:
            gateway = await start_gateway(
                out_dir,
                f"gateway-{name}",
                upstream=f"http://{LOOPBACK}:{up_port}",
                validate_url=stub.validate_url,
                workers=args.workers,
                auth={
                    "cache_ttl": args.cache_ttl,
                    "stale_if_error": stale,
                    "timeout": AUTH_TIMEOUT,
                },
            )
            users = [f"soak-{name}-{i}" for i in range(args.users)]
            loads.append(Load(name, gateway, stale, users))
        log(
            f"load: {args.rate:g} req/s per gateway, {args.users} users,"
            f" {args.duration:g} s; faults {faults}"
        )
        started = asyncio.get_running_loop().time()
        await asyncio.gather(
            run_faults(faults, stub, loads, started, args.cache_ttl),
            *(load.run(started, args.duration, args.rate) for load in loads),
        )
        for load in loads:
            await load.read_metrics()
    finally:
        for load in loads:
            await stop_gateway(load.gateway)
        await stub.stop()
        await up_runner.cleanup()
    results = checks(loads, faults)
    return report(args, faults, loads, stub, results), all(ok for ok, _ in results)


async def _ok(request: web.Request) -> web.Response:
    return web.Response(text="ok\n")


def report(
    args: argparse.Namespace,
    faults: Sequence[Fault],
    loads: Sequence[Load],
    stub: AuthStub,
    results: Sequence[tuple[bool, str]],
) -> str:
    lines = [
        "# Soak: signed-in users through auth API outages",
        "",
        f"- machine: {machine_info()}",
        f"- command: `.venv/bin/python bench/soak.py {' '.join(sys.argv[1:])}`",
        f"- load: {args.users} signed-in users, {args.rate:g} req/s per gateway for"
        f" {args.duration:g} s; gateway workers {args.workers}, protect [/], cache_ttl"
        f" {args.cache_ttl:g} s, refresh_ahead 0.8 (default), auth timeout {AUTH_TIMEOUT:g} s",
        "- faults: " + "; ".join(f"{f.kind} {f.at:g}-{f.end:g} s ({f.length:g} s)" for f in faults),
        "",
        "| gateway | stale_if_error | requests | 503 for signed-in users | 503 during outages |"
        " other | p50 / p99 ms outside outages | p50 / p99 ms during | auth calls |"
        " /metrics by auth outcome |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for load in loads:
        during, outside = load.statuses(faults, True), load.statuses(faults, False)
        seen = during + outside
        other = {k: v for k, v in seen.items() if k not in (200, 503)}
        calls = sum(n for prefix, n in stub.calls.items() if prefix == f"soak-{load.name}")
        lines.append(
            f"| {load.name} | {load.stale_if_error:g} | {len(load.answers)} | {seen[503]} |"
            f" {during[503]} | {other or '-'} | {load.latency_ms(faults, False)} |"
            f" {load.latency_ms(faults, True)} | {calls} |"
            f" {', '.join(f'{k}: {v:g}' for k, v in sorted(load.metrics.items()))} |"
        )
    lines += ["", "Checks:", ""]
    lines += [f"- {'PASS' if ok else 'FAIL'}: {text}" for ok, text in results]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--duration", type=float, default=180.0, help="seconds (default 180)")
    parser.add_argument("--users", type=int, default=50)
    parser.add_argument("--rate", type=float, default=100.0, help="req/s per gateway")
    parser.add_argument("--cache-ttl", type=float, default=20.0)
    parser.add_argument("--stale-if-error", type=float, default=300.0)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument(
        "--faults",
        type=fault_kinds,
        default=["refused", "5xx"],
        help="outages in order, from refused,5xx,timeout (default refused,5xx)",
    )
    parser.add_argument(
        "--no-control", action="store_true", help="skip the stale_if_error 0 gateway"
    )
    args = parser.parse_args()
    text, passed = asyncio.run(run(args))
    write_report("soak", text)
    sys.exit(0 if passed else 1)


if __name__ == "__main__":
    main()
