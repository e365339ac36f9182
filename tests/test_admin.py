"""The admin listener: /healthz, /readyz naming the failing check, /metrics, revocation."""

from __future__ import annotations

import aiohttp
import pytest

from gateway.admin import RevokeRefused, revocation_digest
from gateway.cache import CookieHasher
from tests.support.harness import GOOD, GatewayFactory
from tests.support.process import free_port
from tests.support.rawhttp import exchange, get


async def admin_get(port: int, path: str) -> tuple[int, str, str]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{port}{path}") as response,
    ):
        return response.status, response.headers.get("Content-Type", ""), await response.text()


async def test_healthz_and_readyz_when_all_is_up(gateway_factory: GatewayFactory) -> None:
    """healthz says alive; readyz says ready when upstream and auth API are reachable."""
    gw = await gateway_factory(admin_listen="127.0.0.1:0")
    port = gw.running.admin_port
    assert port is not None
    assert (await admin_get(port, "/healthz"))[0] == 200
    status, _, body = await admin_get(port, "/readyz")
    assert status == 200, body
    assert '"ready"' in body


async def test_readyz_names_the_failing_check(gateway_factory: GatewayFactory) -> None:
    """readyz answers 503 naming the unreachable dependency."""
    dead = f"http://127.0.0.1:{free_port()}"
    gw = await gateway_factory(admin_listen="127.0.0.1:0", auth=dead)
    assert gw.running.admin_port is not None
    status, _, body = await admin_get(gw.running.admin_port, "/readyz")
    assert status == 503
    assert '"auth_api"' in body and "unreachable" in body
    assert '"upstream": "ok"' in body


async def test_metrics_count_requests_auth_and_cache(gateway_factory: GatewayFactory) -> None:
    """/metrics shows requests by status class and outcome, validation calls and cache lookups."""
    gw = await gateway_factory(admin_listen="127.0.0.1:0")
    assert gw.running.admin_port is not None
    await exchange(gw.port, get("/", "Accept: text/html"))
    await exchange(gw.port, get("/dashboard", "Accept: text/html"))
    for _ in range(2):
        await exchange(gw.port, get("/dashboard", f"Cookie: session={GOOD}"))
    status, content_type, text = await admin_get(gw.running.admin_port, "/metrics")
    assert status == 200
    assert content_type.startswith("text/plain")
    assert 'gateway_requests_total{auth="public",status_class="2xx"} 1.0' in text
    assert 'gateway_requests_total{auth="denied",status_class="3xx"} 1.0' in text
    assert 'gateway_requests_total{auth="validated",status_class="2xx"} 1.0' in text
    assert 'gateway_requests_total{auth="cached",status_class="2xx"} 1.0' in text
    assert 'gateway_auth_calls_total{result="valid"} 1.0' in text
    assert 'gateway_auth_cache_total{result="hit"} 1.0' in text
    assert "gateway_auth_cache_entries 1.0" in text
    assert "gateway_request_duration_seconds_bucket" in text
    assert "gateway_open_connections" in text


async def test_metrics_count_upstream_errors(gateway_factory: GatewayFactory) -> None:
    """Failures to reach the frontend are counted by kind."""
    gw = await gateway_factory(
        admin_listen="127.0.0.1:0", upstream=f"http://127.0.0.1:{free_port()}"
    )
    assert gw.running.admin_port is not None
    assert (await exchange(gw.port, get("/"))).status == 502
    _, _, text = await admin_get(gw.running.admin_port, "/metrics")
    assert 'gateway_upstream_errors_total{kind="unreachable"} 1.0' in text


@pytest.mark.parametrize("secret", ["shared-cache-test-secret", None])
def test_revocation_by_session_names_its_digest(secret: str | None) -> None:
    """Revoking a session value names that session's digest, with or without a shared secret."""
    hasher = CookieHasher.from_secret(secret)
    assert revocation_digest(hasher, "cookie-value", None) == hasher("cookie-value")


def test_revocation_by_digest_is_taken_as_given_under_a_shared_secret() -> None:
    """With a shared secret a digest from any process's logs is revoked as it is."""
    hasher = CookieHasher.from_secret("shared-cache-test-secret")
    assert revocation_digest(hasher, None, "ab" * 32) == "ab" * 32


def test_revocation_by_digest_needs_the_shared_secret() -> None:
    """Without auth.cache.secret digests are per process, so revoking by one is refused."""
    with pytest.raises(RevokeRefused, match=r"needs auth\.cache\.secret"):
        revocation_digest(CookieHasher.from_secret(None), None, "ab" * 32)
