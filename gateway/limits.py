"""Connection-level protection: caps, deadlines, overload shedding, and their accounting.

A client can hold a process's resources without ever completing a request: connections that send
their headers one line at a time (slowloris), idle connections by the thousand, bodies that stall.
This module decides who is admitted and who is cut off; gateway/protocol.py applies it to each
connection. Nothing here logs per connection: refusals are counted (/metrics), summed up in one
log line a second at most, and named in /readyz while they go on.
"""

from __future__ import annotations

import asyncio
import collections
import resource
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol

import structlog

from gateway.config import GatewayConfig, LimitsConfig
from gateway.metrics import Metrics
from gateway.routing import AUTH_POOL_SIZE, UPSTREAM_POOL_SIZE

log = structlog.get_logger("gateway.limits")

# Descriptors kept free of clients: the app pool, the auth API pool, and 64 for Redis, log files,
# the admin listener, the listening sockets and a worker's control socket.
DESCRIPTOR_HEADROOM = UPSTREAM_POOL_SIZE + AUTH_POOL_SIZE + 64
# How often deadlines are checked: a 10 s header deadline is kept to within a second, and the
# check costs nothing on the request path.
SWEEP_SECONDS = 1.0
# The event loop is overloaded when LAGGED_TICKS ticks in a row (100 ms apart) each came more
# than limits.overload_lag late: a queue of ready work that long means every new request waits
# behind it, and three in a row tell sustained overload from one garbage collection.
LAG_TICK_SECONDS = 0.1
LAGGED_TICKS = 3
# Refusals within this window show in /readyz.
SUSTAINED_SECONDS = 10.0
# Shed requests are told to come back after this long; and for this long after a connection was
# refused at max_connections (none idle to reclaim), the process counts as full.
SHED_RETRY_AFTER = "1"
FULL_SECONDS = 1.0


class Connection(Protocol):
    """What the guard needs of a client connection (gateway/protocol.py's handler)."""

    @property
    def idle(self) -> bool: ...

    def force_close(self) -> None: ...

    def enforce_deadlines(self, now: float) -> str | None: ...


def fit_descriptors(limits: LimitsConfig) -> int:
    """The connection cap this process can keep: raise the soft RLIMIT_NOFILE to make room for
    max_connections plus DESCRIPTOR_HEADROOM, and lower the cap (with a warning) where the hard
    limit does not allow that."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = limits.max_connections + DESCRIPTOR_HEADROOM
    ceiling = need if hard == resource.RLIM_INFINITY else min(need, hard)
    if soft != resource.RLIM_INFINITY and soft < ceiling:
        resource.setrlimit(resource.RLIMIT_NOFILE, (ceiling, hard))
        soft = ceiling
    if soft == resource.RLIM_INFINITY or soft >= need:
        return limits.max_connections
    cap = max(soft - DESCRIPTOR_HEADROOM, 1)
    log.warning(
        "limits.max_connections lowered to fit RLIMIT_NOFILE",
        configured=limits.max_connections,
        cap=cap,
        nofile=soft,
    )
    return cap


@dataclass
class Refusals:
    """Counts refusals by kind: in /metrics at once, in a log line at most once a second."""

    metrics: Metrics
    clock: Callable[[], float] = time.monotonic
    _pending: collections.Counter[str] = field(default_factory=collections.Counter)
    _recent: collections.deque[tuple[float, str]] = field(default_factory=collections.deque)

    def count(self, kind: str) -> None:
        self.metrics.refusals.labels(kind).inc()
        self._pending[kind] += 1
        self._recent.append((self.clock(), kind))

    def flush(self) -> None:
        """One summary line for what was refused since the last one."""
        if self._pending:
            log.warning("connections refused or cut", **dict(self._pending))
            self._pending.clear()

    def sustained(self) -> dict[str, int]:
        """Refusals by kind within the last SUSTAINED_SECONDS."""
        horizon = self.clock() - SUSTAINED_SECONDS
        while self._recent and self._recent[0][0] < horizon:
            self._recent.popleft()
        return dict(collections.Counter(kind for _, kind in self._recent))


class ConnectionGuard:
    """Admits connections within the process cap and the per-address cap.

    At the process cap an idle keep-alive connection is closed to make room (as nginx reuses
    them); only when none is idle is the new one refused. A peer in trusted_proxies (a load
    balancer carrying many clients) is not held to the per-address cap.
    """

    def __init__(
        self,
        max_connections: int,
        per_ip: int,
        trusted: Callable[[str], bool],
        refusals: Refusals,
    ) -> None:
        self.max_connections = max_connections
        self.per_ip = per_ip
        self._trusted = trusted
        self._refusals = refusals
        self._by_ip: collections.Counter[str] = collections.Counter()
        self._ip_of: dict[object, str] = {}
        self._full_at = -FULL_SECONDS

    @property
    def open(self) -> int:
        return len(self._ip_of)

    def admit(
        self, connection: object, ip: str, others: Callable[[], Iterable[Connection]]
    ) -> bool:
        """`others` lists the open connections; called only at the cap, since listing them
        costs as many steps as there are connections."""
        if self._by_ip[ip] >= self.per_ip and not self._trusted(ip):
            self._refusals.count("per_ip")
            return False
        if len(self._ip_of) >= self.max_connections and not self._reclaim(others):
            self._refusals.count("max_connections")
            self._full_at = time.monotonic()
            return False
        self._by_ip[ip] += 1
        self._ip_of[connection] = ip
        return True

    @property
    def full(self) -> bool:
        """A connection was refused at the cap within the last FULL_SECONDS."""
        return time.monotonic() - self._full_at < FULL_SECONDS

    def release(self, connection: object) -> None:
        ip = self._ip_of.pop(connection, None)
        if ip is not None:
            self._by_ip[ip] -= 1
            if self._by_ip[ip] <= 0:
                del self._by_ip[ip]

    def _reclaim(self, others: Callable[[], Iterable[Connection]]) -> bool:
        for other in others():
            if other.idle:
                other.force_close()
                self._refusals.count("idle_reclaimed")
                return True
        return False


class LoadWatch:
    """Whether the process is overloaded (event loop lag, or the connection cap reached), and
    the deadline sweep over open connections."""

    def __init__(
        self,
        guard: ConnectionGuard,
        refusals: Refusals,
        connections: Callable[[], Iterable[Connection]],
        overload_lag: float,
    ) -> None:
        self._guard = guard
        self._overload_lag = overload_lag
        self._lagged = 0
        self._refusals = refusals
        self._connections = connections
        self.lag = 0.0
        # Read by every request (the shedding stage), so worked out once a tick, not per read.
        self.overloaded = False
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self._tasks = [asyncio.ensure_future(self._ticks()), asyncio.ensure_future(self._sweeps())]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _ticks(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            expected = loop.time() + LAG_TICK_SECONDS
            await asyncio.sleep(LAG_TICK_SECONDS)
            self.lag = max(loop.time() - expected, 0.0)
            late = 0 < self._overload_lag < self.lag
            self._lagged = self._lagged + 1 if late else 0
            self.overloaded = self._lagged >= LAGGED_TICKS or self._guard.full

    async def _sweeps(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(SWEEP_SECONDS)
            now = loop.time()
            for connection in self._connections():
                kind = connection.enforce_deadlines(now)
                if kind is not None:
                    self._refusals.count(kind)
            self._refusals.flush()

    def check(self) -> str | None:
        """For /readyz: what is being refused or shed now, or None."""
        recent = self._refusals.sustained()
        parts = [f"{kind} {count}" for kind, count in sorted(recent.items())]
        if self.overloaded:
            parts.insert(
                0, f"overloaded (loop lag {self.lag * 1000:.0f} ms, full {self._guard.full})"
            )
        if not parts:
            return None
        return f"degraded: {', '.join(parts)} in the last {SUSTAINED_SECONDS:g} s"


def build_limits(
    config: GatewayConfig, metrics: Metrics, trusted: Callable[[str], bool]
) -> tuple[ConnectionGuard, Refusals]:
    refusals = Refusals(metrics)
    guard = ConnectionGuard(
        fit_descriptors(config.limits), config.limits.max_connections_per_ip, trusted, refusals
    )
    return guard, refusals
