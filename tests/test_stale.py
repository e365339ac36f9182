"""Riding out an auth API outage: refresh ahead of expiry, and serving a session stale on error.

Every test signs in once, then moves the auth API (a real server on loopback) into a fault and
waits on the clock until the cached validation has reached the age the test needs.
"""

from __future__ import annotations

import asyncio
import io
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest
from aiohttp import web

from gateway.demo_runner import serve_app
from tests.support.backends import GOOD_USER, AuthApi, build_auth_api
from tests.support.harness import GOOD, GatewayFactory, Gw, eventually
from tests.support.rawhttp import exchange, get
from tests.test_admin import admin_get
from tests.test_logs import request_lines
from tests.test_workers import revoke

TTL = 1.0
STALE = 30.0
AUTH_TIMEOUT = 0.5
# How far past a moment a test waits, so the gateway's clock has certainly passed it too.
MARGIN = 0.05
ADMIN_TOKEN = "stale-test-admin-token-0123"
EMAIL = str(GOOD_USER["email"])
RENEWED_EMAIL = "ada@renewed.example.com"


@dataclass
class Api:
    """The auth API the gateway validates against; a test can answer for it or take it down."""

    state: AuthApi
    runner: web.AppRunner | None = None
    port: int = 0

    @property
    def validate_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/auth/sessions/validate"

    async def start(self) -> None:
        self.runner, self.port = await serve_app(build_auth_api(self.state))

    async def stop(self) -> None:
        """Nothing listens any more: connections are refused."""
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None


@pytest.fixture
async def api() -> AsyncIterator[Api]:
    server = Api(AuthApi(sessions={GOOD: dict(GOOD_USER)}))
    await server.start()
    yield server
    if server.state.gate is not None:
        server.state.gate.set()
    await server.stop()


@dataclass
class Answer:
    status: int
    email: str | None

    @classmethod
    def of(cls, status: int, body: bytes) -> Answer:
        """The status, and the identity the frontend received (its echo of the headers)."""
        if status != 200:
            return cls(status, None)
        headers = {name.lower(): value for name, value in json.loads(body)["headers"]}
        return cls(status, headers.get("x-auth-user-email"))


async def visit(gw: Gw, cookie: str = GOOD) -> Answer:
    response = await exchange(
        gw.port, get("/dashboard", f"Cookie: session={cookie}", "Accept: text/html")
    )
    return Answer.of(response.status, response.body)


async def until(moment: float) -> None:
    """Wait on the clock until `moment` (time.monotonic()) has passed."""
    await asyncio.sleep(max(0.0, moment - time.monotonic()) + MARGIN)


async def gateway(gateway_factory: GatewayFactory, api: Api, **auth: Any) -> Gw:
    settings = {
        "validate_url": api.validate_url,
        "timeout": AUTH_TIMEOUT,
        "cache_ttl": TTL,
        "stale_if_error": STALE,
        **auth,
    }
    return await gateway_factory(auth=settings, admin_listen="127.0.0.1:0", admin_token=ADMIN_TOKEN)


async def sign_in(gw: Gw) -> float:
    """One validated visit; returns a moment no earlier than the validation."""
    assert await visit(gw) == Answer(200, EMAIL)
    return time.monotonic()


def outcomes(log_output: io.StringIO) -> list[object]:
    return [line["auth"] for line in request_lines(log_output)]


async def readyz(gw: Gw) -> tuple[int, dict[str, Any]]:
    assert gw.running.admin_port is not None
    status, _, body = await admin_get(gw.running.admin_port, "/readyz")
    answer: dict[str, Any] = json.loads(body)
    return status, answer


# -- refresh ahead ------------------------------------------------------------------------------


async def test_refresh_ahead_answers_at_once_and_calls_the_api_once(
    gateway_factory: GatewayFactory, api: Api, log_output: io.StringIO
) -> None:
    """At 0.85 x ttl requests are answered from the cache while one refresh waits on the API;
    its answer renews the entry with the new identity."""
    ttl = 4.0
    gw = await gateway(gateway_factory, api, cache_ttl=ttl, timeout=2.0)
    signed_in = await sign_in(gw)
    api.state.gate = asyncio.Event()
    api.state.sessions[GOOD] = dict(GOOD_USER, email=RENEWED_EMAIL)
    await until(signed_in + 0.85 * ttl)
    for _ in range(5):
        started = time.monotonic()
        assert await visit(gw) == Answer(200, EMAIL)
        assert time.monotonic() - started < 0.25
    await eventually(lambda: api.state.inflight == 1)
    assert len(api.state.calls) == 2
    api.state.gate.set()
    await eventually(lambda: api.state.inflight == 0)
    answers = [await visit(gw)]
    while answers[-1].email != RENEWED_EMAIL and time.monotonic() < signed_in + ttl:
        answers.append(await visit(gw))
    assert answers[-1] == Answer(200, RENEWED_EMAIL), answers
    assert len(api.state.calls) == 2
    assert outcomes(log_output) == ["validated"] + ["cached"] * (5 + len(answers))


async def test_a_401_on_refresh_makes_the_next_request_a_deny(
    gateway_factory: GatewayFactory, api: Api
) -> None:
    """A refresh the API answers 401 evicts the session before its ttl would have."""
    ttl = 2.0
    gw = await gateway(gateway_factory, api, cache_ttl=ttl)
    signed_in = await sign_in(gw)
    del api.state.sessions[GOOD]
    await until(signed_in + 0.85 * ttl)
    assert (await visit(gw)).status == 200
    await eventually(lambda: len(api.state.calls) == 2 and api.state.inflight == 0)
    statuses = [(await visit(gw)).status]
    while statuses[-1] == 200 and time.monotonic() < signed_in + ttl:
        statuses.append((await visit(gw)).status)
    assert statuses[-1] == 302, statuses
    assert time.monotonic() < signed_in + ttl


async def test_refresh_ahead_zero_is_off(gateway_factory: GatewayFactory, api: Api) -> None:
    """refresh_ahead: 0 makes no call before the entry expires."""
    ttl = 2.0
    gw = await gateway(gateway_factory, api, cache_ttl=ttl, refresh_ahead=0)
    signed_in = await sign_in(gw)
    await until(signed_in + 0.9 * ttl)
    assert (await visit(gw)).status == 200
    assert len(api.state.calls) == 1


# -- stale on error -----------------------------------------------------------------------------


async def _slow(api: Api) -> None:
    api.state.delay = 3 * AUTH_TIMEOUT


async def _refused(api: Api) -> None:
    await api.stop()


async def _server_error(api: Api) -> None:
    api.state.answer = (503, "down for maintenance")


async def _bad_answer(api: Api) -> None:
    api.state.answer = (200, "<html>not json</html>")


FAULTS: dict[str, Callable[[Api], Awaitable[None]]] = {
    "timeout": _slow,
    "refused": _refused,
    "5xx": _server_error,
    "bad-answer": _bad_answer,
}


@pytest.mark.parametrize("fault", FAULTS)
async def test_a_session_is_served_stale_while_the_api_errs(
    gateway_factory: GatewayFactory, api: Api, log_output: io.StringIO, fault: str
) -> None:
    """Past its ttl, within stale_if_error, an erring API: the last identity, outcome stale,
    counted in /metrics, and /readyz names the auth API as failing."""
    gw = await gateway(gateway_factory, api)
    signed_in = await sign_in(gw)
    await FAULTS[fault](api)
    await until(signed_in + TTL)
    assert await visit(gw) == Answer(200, EMAIL)
    assert outcomes(log_output) == ["validated", "stale"]
    assert gw.running.admin_port is not None
    _, _, metrics = await admin_get(gw.running.admin_port, "/metrics")
    assert 'gateway_requests_total{auth="stale",status_class="2xx"} 1.0' in metrics
    status, body = await readyz(gw)
    assert status == 503, body
    assert body["failing"] == ["auth_api"], body
    assert body["checks"]["auth_api"].startswith("not ready: "), body


async def test_readyz_is_ready_again_once_the_api_answers(
    gateway_factory: GatewayFactory, api: Api
) -> None:
    """After a stale answer, the API's next 2xx validates afresh and /readyz is ready."""
    gw = await gateway(gateway_factory, api)
    signed_in = await sign_in(gw)
    await _server_error(api)
    await until(signed_in + TTL)
    assert (await visit(gw)).status == 200
    assert (await readyz(gw))[0] == 503
    api.state.answer = None
    await until(time.monotonic() + TTL)
    assert (await visit(gw)).status == 200
    status, body = await readyz(gw)
    assert (status, body["status"]) == (200, "ready"), body


async def test_cache_ttl_zero_still_keeps_the_stale_copy(
    gateway_factory: GatewayFactory, api: Api
) -> None:
    """cache_ttl 0 validates every request, and stale_if_error still serves the last valid one."""
    gw = await gateway(gateway_factory, api, cache_ttl=0)
    await sign_in(gw)
    await sign_in(gw)
    assert len(api.state.calls) == 2
    await _server_error(api)
    assert await visit(gw) == Answer(200, EMAIL)


@pytest.mark.parametrize("refusal", [401, 403])
async def test_no_stale_answer_after_a_refusal(
    gateway_factory: GatewayFactory, api: Api, refusal: int
) -> None:
    """A 401/403 is final: the session is denied, and an outage after it finds no stale copy."""
    gw = await gateway(gateway_factory, api)
    signed_in = await sign_in(gw)
    api.state.answer = (refusal, '{"error": "signed out"}')
    await until(signed_in + TTL)
    assert (await visit(gw)).status == 302
    await _server_error(api)
    assert (await visit(gw)).status == 503


async def test_a_cookie_never_valid_gets_503(gateway_factory: GatewayFactory, api: Api) -> None:
    """Fail closed is unchanged for a cookie the gateway has never seen valid."""
    gw = await gateway(gateway_factory, api)
    await sign_in(gw)
    await _server_error(api)
    assert (await visit(gw, "never-seen-valid-0123")).status == 503


@pytest.mark.parametrize("stale", [0.0, 1.0], ids=["off", "past-window"])
async def test_past_the_stale_window_is_503(
    gateway_factory: GatewayFactory, api: Api, stale: float
) -> None:
    """A session more than stale_if_error past its expiry (0: off) gets 503."""
    gw = await gateway(gateway_factory, api, stale_if_error=stale)
    signed_in = await sign_in(gw)
    await _server_error(api)
    await until(signed_in + TTL + stale)
    assert (await visit(gw)).status == 503


async def test_revocation_removes_the_stale_copy(gateway_factory: GatewayFactory, api: Api) -> None:
    """POST /sessions/revoke during an outage: the session is not served stale any more."""
    gw = await gateway(gateway_factory, api)
    signed_in = await sign_in(gw)
    await _server_error(api)
    await until(signed_in + TTL)
    assert (await visit(gw)).status == 200
    assert gw.running.admin_port is not None
    status, body = await revoke(gw.running.admin_port, ADMIN_TOKEN, session=GOOD)
    assert (status, body["local"]) == (200, True), body
    assert (await visit(gw)).status == 503
