"""Prometheus metrics: what an operator needs to see the gateway's health from outside.

Each gateway owns its registry (tests run several gateways in one process); with several workers
the admin endpoint merges every worker's values through prometheus-client's multiprocess mode.
"""

from __future__ import annotations

import os

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

from gateway.logs import AccessRecord

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def multiprocess_mode() -> bool:
    return bool(os.environ.get(MULTIPROC_ENV))


class Metrics:
    """The gateway's counters, gauges and histograms."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        # In multiprocess mode values live in files shared by the workers, not in a registry.
        self.registry = registry if registry is not None else CollectorRegistry()
        reg = None if multiprocess_mode() else self.registry
        self.requests = Counter(
            "gateway_requests",
            "Requests answered, by status class and auth outcome.",
            ["status_class", "auth"],
            registry=reg,
        )
        self.latency = Histogram(
            "gateway_request_duration_seconds",
            "Time from request to the end of the answer.",
            buckets=LATENCY_BUCKETS,
            registry=reg,
        )
        self.auth_calls = Counter(
            "gateway_auth_calls",
            "Validation calls made to the auth API, by result.",
            ["result"],
            registry=reg,
        )
        self.auth_latency = Histogram(
            "gateway_auth_call_duration_seconds",
            "Duration of validation calls to the auth API.",
            buckets=LATENCY_BUCKETS,
            registry=reg,
        )
        self.cache = Counter(
            "gateway_auth_cache",
            "Validation cache lookups, by result (hit or miss).",
            ["result"],
            registry=reg,
        )
        self.cache_entries = Gauge(
            "gateway_auth_cache_entries",
            "Sessions held in the validation cache.",
            registry=reg,
            multiprocess_mode="livesum",
        )
        self.upstream_errors = Counter(
            "gateway_upstream_errors",
            "Failures reaching or reading the frontend, by kind.",
            ["kind"],
            registry=reg,
        )
        self.connections = Gauge(
            "gateway_open_connections",
            "Client connections open now.",
            registry=reg,
            multiprocess_mode="livesum",
        )
        self.websockets = Gauge(
            "gateway_websocket_sessions",
            "WebSocket sessions being relayed now.",
            registry=reg,
            multiprocess_mode="livesum",
        )
        self.refusals = Counter(
            "gateway_refusals",
            "Connections closed and requests shed to protect the process, by kind.",
            ["kind"],
            registry=reg,
        )
        # The earliest among live workers: one that kept an old certificate is the one to renew.
        self.tls_expiry = Gauge(
            "hamrah_gateway_tls_cert_expiry_seconds",
            "When the served TLS certificate expires (Unix time).",
            registry=reg,
            multiprocess_mode="livemin",
        )
        self._cache_hit = self.cache.labels("hit")
        self._cache_miss = self.cache.labels("miss")
        # labels() takes a lock and builds a key on every call; the children are few and fixed.
        self._request_children: dict[tuple[int, str], Counter] = {}

    def cache_lookup(self, hit: bool) -> None:
        (self._cache_hit if hit else self._cache_miss).inc()

    def observe_request(self, status: int, record: AccessRecord | None, seconds: float) -> None:
        auth = record.auth if record is not None else "none"
        key = (status // 100, auth)
        child = self._request_children.get(key)
        if child is None:
            child = self.requests.labels(f"{status // 100}xx", auth)
            self._request_children[key] = child
        child.inc()
        self.latency.observe(seconds)

    def exposition(self) -> bytes:
        if multiprocess_mode():
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
            return generate_latest(registry)
        return generate_latest(self.registry)
