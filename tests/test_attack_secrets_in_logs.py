"""Attack class 8, secrets in logs: a session cookie or bearer token never shows up in a log line.

Canary values ride every code path (success, denial, each auth API failure, parser refusals, bad
paths, frontend down or slow, websockets), in the session cookie, the Authorization header, the
query string, another cookie and a debug header. Nothing the gateway or the libraries under it log
at debug level, and no body the client gets back, may contain them. The real command line is
checked the same way, as a process, from its whole stdout and stderr.
"""

from __future__ import annotations

import asyncio
import io
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest
import yaml

from tests.support import rawhttp
from tests.support.backends import GOOD_USER, RawUpstream
from tests.support.harness import DEFAULT_PROTECT, Backend, GatewayFactory, Gw, config_text
from tests.support.process import GatewayProcess, free_port, wait_for_port

CANARY_SESSION = "canarySESS7f3a9c1e5b2d4086"
CANARY_BEARER = "canaryBEAR0d8e6b4f2a9c1357"
# A token the app sets in an answer the gateway cannot read: not the request's, so the redactor
# does not know it; the error must not quote it.
CANARY_SET_COOKIE = "canaryNEWS5e1c3a7f9b0d2468"
CANARIES = (CANARY_SESSION, CANARY_BEARER, CANARY_SET_COOKIE)
HOST = "gateway.test"
# Protected routes of the test frontend that do not echo the request back in their body.
QUIET_PROTECT = [*DEFAULT_PROTECT, "/download", "/slow", "/cut", "/cookies", "/gzip"]

# A WebSocket handshake sent as a plain request, to see the gateway's answer to a refused one.
HANDSHAKE = {
    "Connection": "Upgrade",
    "Upgrade": "websocket",
    "Sec-WebSocket-Version": "13",
    "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
}


def bearer_query() -> str:
    return f"token={CANARY_BEARER}"


def both_query() -> str:
    return f"token={CANARY_BEARER}&sid={CANARY_SESSION}"


def canary_lines(
    session: str | None, *, debug: str = f"{CANARY_SESSION} {CANARY_BEARER}"
) -> list[str]:
    """Header lines carrying the canaries: bearer token, the session, another cookie, debug."""
    cookie = f"other={CANARY_BEARER}; theme=dark"
    if session is not None:
        cookie = f"{cookie}; session={session}"
    return [
        f"Authorization: Bearer {CANARY_BEARER}",
        f"Cookie: {cookie}",
        f"X-Debug: {debug}",
    ]


@dataclass
class Seen:
    """Every body (and websocket message) the client got during one scenario."""

    bodies: list[bytes] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)

    async def raw(self, port: int, target: str, *lines: str, accept: str = "text/html") -> int:
        data = rawhttp.get(target, f"Accept: {accept}", *lines, host=HOST)
        return await self.send(port, data)

    async def send(self, port: int, data: bytes) -> int:
        response = await rawhttp.exchange_or_close(port, data)
        if response is None:
            self.statuses.append(0)
            return 0
        self.bodies.append(response.body)
        self.statuses.append(response.status)
        return response.status


Scenario = Callable[[GatewayFactory, Seen], Awaitable[None]]


async def quiet_gateway(factory: GatewayFactory, **overrides: object) -> Gw:
    overrides.setdefault("protect", QUIET_PROTECT)
    gw = await factory(**overrides)
    gw.api.sessions[CANARY_SESSION] = dict(GOOD_USER)
    return gw


async def success(factory: GatewayFactory, seen: Seen) -> None:
    gw = await quiet_gateway(factory)
    target = f"/download?size=64&{both_query()}"
    assert await seen.raw(gw.port, target, *canary_lines(CANARY_SESSION)) == 200
    # The second time comes from the auth cache.
    assert await seen.raw(gw.port, target, *canary_lines(CANARY_SESSION)) == 200
    assert len(gw.api.calls) == 1


async def success_public(factory: GatewayFactory, seen: Seen) -> None:
    gw = await quiet_gateway(factory, protect=["/dashboard"])
    assert (
        await seen.raw(gw.port, f"/download?size=8&{both_query()}", *canary_lines(CANARY_SESSION))
        == 200
    )


async def denied_html(factory: GatewayFactory, seen: Seen) -> None:
    gw = await quiet_gateway(factory)
    # The query names only this request's own secrets: the gateway cannot know others.
    target = f"/dashboard?{bearer_query()}"
    assert await seen.raw(gw.port, target, *canary_lines("canaryUNKNOWN-not-valid")) == 302
    gw.api.sessions.pop(CANARY_SESSION)
    target = f"/dashboard?{both_query()}"
    assert await seen.raw(gw.port, target, *canary_lines(CANARY_SESSION)) == 302


async def denied_json(factory: GatewayFactory, seen: Seen) -> None:
    gw = await quiet_gateway(factory)
    gw.api.sessions.pop(CANARY_SESSION)
    target = f"/dashboard?{both_query()}"
    status = await seen.raw(
        gw.port, target, *canary_lines(CANARY_SESSION), accept="application/json"
    )
    assert status == 401


async def no_session_bearer_only(factory: GatewayFactory, seen: Seen) -> None:
    gw = await quiet_gateway(factory)
    assert await seen.raw(gw.port, f"/dashboard?{bearer_query()}", *canary_lines(None)) == 302


def auth_error(token: str) -> Scenario:
    async def scenario(factory: GatewayFactory, seen: Seen) -> None:
        gw = await quiet_gateway(factory)
        lines = canary_lines(token, debug=CANARY_BEARER)
        for accept in ("text/html", "application/json"):
            status = await seen.raw(gw.port, f"/dashboard?{bearer_query()}", *lines, accept=accept)
            assert status == 503

    return scenario


async def auth_refused(factory: GatewayFactory, seen: Seen) -> None:
    gw = await quiet_gateway(factory, auth=f"http://127.0.0.1:{free_port()}")
    lines = canary_lines(CANARY_SESSION)
    assert await seen.raw(gw.port, f"/dashboard?{both_query()}", *lines) == 503


async def auth_timeout(factory: GatewayFactory, seen: Seen) -> None:
    gw = await quiet_gateway(factory)
    gw.api.delay = 1.3
    lines = canary_lines(CANARY_SESSION)
    assert await seen.raw(gw.port, f"/dashboard?{both_query()}", *lines) == 503


async def oversized_cookie_431(factory: GatewayFactory, seen: Seen) -> None:
    gw = await quiet_gateway(factory)
    huge = f"Cookie: session={CANARY_SESSION}; pad=" + "p" * 9000 + f"; other={CANARY_BEARER}"
    lines = [f"Authorization: Bearer {CANARY_BEARER}", huge]
    assert await seen.raw(gw.port, f"/dashboard?{both_query()}", *lines) == 431
    big_auth = f"Authorization: Bearer {CANARY_BEARER}" + "x" * 9000
    assert await seen.raw(gw.port, f"/dashboard?{both_query()}", big_auth) == 431


async def headers_too_large_together_431(factory: GatewayFactory, seen: Seen) -> None:
    gw = await quiet_gateway(factory)
    pads = [f"X-Pad-{n}: " + "p" * 7000 for n in range(5)]
    lines = [*canary_lines(CANARY_SESSION), *pads]
    assert await seen.raw(gw.port, f"/dashboard?{both_query()}", *lines) == 431


async def too_many_headers_431(factory: GatewayFactory, seen: Seen) -> None:
    gw = await quiet_gateway(factory)
    lines = [*canary_lines(CANARY_SESSION), *(f"X-N{n}: {n}" for n in range(200))]
    assert await seen.raw(gw.port, f"/dashboard?{both_query()}", *lines) == 431


async def request_line_too_long_414(factory: GatewayFactory, seen: Seen) -> None:
    gw = await quiet_gateway(factory)
    target = f"/dashboard?{both_query()}&pad=" + "q" * 17000
    assert await seen.raw(gw.port, target, *canary_lines(CANARY_SESSION)) == 414


async def bad_path_400(factory: GatewayFactory, seen: Seen) -> None:
    gw = await quiet_gateway(factory)
    lines = canary_lines(CANARY_SESSION)
    for target in (
        f"/dashboard/%2f{CANARY_SESSION}?{both_query()}",
        f"/dashboard/{CANARY_BEARER}%00?{both_query()}",
        f"/dashboard/%25%32%46{CANARY_BEARER}",
        f"/dashboard/{CANARY_SESSION}\\..\\admin",
        f"/{CANARY_BEARER}/%",
    ):
        assert await seen.raw(gw.port, target, *lines) == 400, target
    assert gw.seen.seen == []


async def ambiguous_cookie_400(factory: GatewayFactory, seen: Seen) -> None:
    gw = await quiet_gateway(factory)
    base = [f"Authorization: Bearer {CANARY_BEARER}", f"X-Debug: {CANARY_SESSION}"]
    # Both values are sent as the session: both are this request's secrets.
    duplicate = f"Cookie: session={CANARY_SESSION}; session={CANARY_BEARER}"
    assert await seen.raw(gw.port, f"/dashboard?{both_query()}", *base, duplicate) == 400
    # Here the session value only contains a canary: the query names the bearer token alone.
    for cookie in (
        f"Cookie: session={CANARY_SESSION} {CANARY_BEARER}",
        f"Cookie: session={'x' * 4100}{CANARY_SESSION}",
    ):
        assert await seen.raw(gw.port, f"/dashboard?{bearer_query()}", *base, cookie) == 400


async def malformed_request_400(factory: GatewayFactory, seen: Seen) -> None:
    gw = await quiet_gateway(factory)
    data = (
        f"GET /dashboard?{both_query()} HTTP/1.1\r\nHost: {HOST}\r\n"
        f"Authorization: Bearer {CANARY_BEARER}\r\nCookie: session={CANARY_SESSION}\r\n"
        f"Bad Header Line {CANARY_SESSION}\r\n\r\n"
    ).encode()
    assert await seen.send(gw.port, data) == 400


async def frontend_down_502(factory: GatewayFactory, seen: Seen) -> None:
    gw = await quiet_gateway(factory, upstream=f"http://127.0.0.1:{free_port()}")
    lines = canary_lines(CANARY_SESSION)
    assert await seen.raw(gw.port, f"/dashboard?{both_query()}", *lines) == 502
    assert await seen.raw(gw.port, f"/hello?{both_query()}", *lines) == 502


async def frontend_slow_504(factory: GatewayFactory, seen: Seen) -> None:
    gw = await quiet_gateway(factory, upstream_timeout=0.3)
    lines = canary_lines(CANARY_SESSION)
    assert await seen.raw(gw.port, f"/slow?delay=0.8&{both_query()}", *lines) == 504
    await asyncio.sleep(0.6)


async def frontend_cuts_body(factory: GatewayFactory, seen: Seen) -> None:
    gw = await quiet_gateway(factory)
    await seen.raw(gw.port, f"/cut?{both_query()}", *canary_lines(CANARY_SESSION))


def malformed_answer(answer: bytes) -> Scenario:
    """The app answers with a Set-Cookie line the parser refuses (and would quote): 502."""

    async def scenario(factory: GatewayFactory, seen: Seen) -> None:
        fake = RawUpstream(response=answer)
        server = await asyncio.start_server(fake.handle, "127.0.0.1", 0)
        try:
            upstream = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
            gw = await quiet_gateway(factory, upstream=upstream)
            lines = canary_lines(CANARY_SESSION)
            assert await seen.raw(gw.port, f"/dashboard?{both_query()}", *lines) == 502
        finally:
            server.close()
            await server.wait_closed()

    return scenario


# A cookie of the app's own (not the session's name, which the redactor knows by pattern).
MALFORMED_SET_COOKIE = {
    "no-colon": f"Set-Cookie refresh={CANARY_SET_COOKIE}",
    "line-too-long": f"Set-Cookie: refresh={CANARY_SET_COOKIE}{'x' * 70000}",
}


async def websocket(factory: GatewayFactory, seen: Seen) -> None:
    gw = await quiet_gateway(factory)
    headers = {
        "Authorization": f"Bearer {CANARY_BEARER}",
        "Cookie": f"session={CANARY_SESSION}; other={CANARY_BEARER}",
        "X-Debug": CANARY_SESSION,
    }
    async with (
        aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as session,
        session.ws_connect(f"{gw.url}/dashboard/ws?{both_query()}", headers=headers) as ws,
    ):
        greeting = await ws.receive(timeout=5)
        assert greeting.data == "hello u-42"
        seen.bodies.append(str(greeting.data).encode())
        await ws.send_str("ping")
        echo = await ws.receive(timeout=5)
        seen.bodies.append(str(echo.data).encode())
        await ws.send_str("close:4000")
        closing = await ws.receive(timeout=5)
        seen.bodies.append(str(closing.extra).encode())
    # Denied and refused upgrades too.
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as session:
        denied = {**headers, "Cookie": "session=canaryNOPE-unknown", "Accept": "text/html"}
        async with session.get(
            f"{gw.url}/dashboard/ws?{bearer_query()}",
            headers={**denied, **HANDSHAKE},
            allow_redirects=False,
        ) as response:
            seen.bodies.append(await response.read())
            seen.statuses.append(response.status)
            assert response.status == 401  # a handshake cannot follow a redirect


AUTH_ERROR_TOKENS = (
    "api-302",
    "api-500",
    "api-404",
    "api-nonjson",
    "api-empty-body",
    "api-array",
    "api-crlf",
    "api-lf",
    "api-nul",
    "api-reset",
)
SCENARIOS: dict[str, Scenario] = {
    "success": success,
    "success-public-path": success_public,
    "denied-html": denied_html,
    "denied-json": denied_json,
    "no-session-bearer-only": no_session_bearer_only,
    **{f"auth-error-{t.removeprefix('api-')}": auth_error(t) for t in AUTH_ERROR_TOKENS},
    "auth-refused": auth_refused,
    "auth-timeout": auth_timeout,
    "431-oversized-cookie": oversized_cookie_431,
    "431-headers-too-large-together": headers_too_large_together_431,
    "431-too-many-headers": too_many_headers_431,
    "414-request-line": request_line_too_long_414,
    "400-bad-path": bad_path_400,
    "400-ambiguous-cookie": ambiguous_cookie_400,
    "400-malformed-request": malformed_request_400,
    "502-frontend-down": frontend_down_502,
    "504-frontend-slow": frontend_slow_504,
    "frontend-cuts-body": frontend_cuts_body,
    **{
        f"502-app-set-cookie-{name}": malformed_answer(
            f"HTTP/1.1 200 OK\r\n{line}\r\nContent-Length: 2\r\n\r\nhi".encode()
        )
        for name, line in MALFORMED_SET_COOKIE.items()
    },
    "websocket": websocket,
}


def occurrences(text: str) -> dict[str, list[str]]:
    """Each canary and the lines it appears in."""
    found: dict[str, list[str]] = {}
    for line in text.splitlines():
        for canary in CANARIES:
            if canary in line:
                found.setdefault(canary, []).append(line[:400])
    return found


@pytest.mark.parametrize("scenario", SCENARIOS.values(), ids=SCENARIOS.keys())
async def test_canaries_never_reach_logs_or_bodies(
    gateway_factory: GatewayFactory, log_output: io.StringIO, scenario: Scenario
) -> None:
    """No log line at debug level, and no body sent to the client, contains a canary secret."""
    seen = Seen()
    await scenario(gateway_factory, seen)
    logs = log_output.getvalue()
    assert '"request"' in logs, "the access log wrote nothing; the check would prove nothing"
    assert occurrences(logs) == {}
    for body in seen.bodies:
        for canary in CANARIES:
            assert canary.encode() not in body, body[:400]


def write_cli_config(path: Path, frontend: Backend, auth: Backend, port: int) -> None:
    data = yaml.safe_load(config_text(frontend, auth, protect=QUIET_PROTECT))
    data["listen"] = f"127.0.0.1:{port}"
    data["log"] = {"level": "debug", "format": "json"}
    path.write_text(yaml.safe_dump(data))


async def test_cli_process_output_has_no_canary(
    tmp_path: Path, frontend: Backend, auth_api: Backend
) -> None:
    """The real `python -m gateway` at debug level writes no canary to stdout or stderr."""
    auth_api.state.sessions[CANARY_SESSION] = dict(GOOD_USER)
    port = free_port()
    config = tmp_path / "gw.yaml"
    write_cli_config(config, frontend, auth_api, port)
    process = GatewayProcess(config, tmp_path / "out.log")
    try:
        await wait_for_port(port)
        seen = Seen()
        q = both_query()
        good = canary_lines(CANARY_SESSION)
        assert await seen.raw(port, f"/download?size=32&{q}", *good) == 200
        assert await seen.raw(port, f"/download?size=32&{q}", *good) == 200
        assert await seen.raw(port, f"/redirect?{q}", *good) == 302
        bad = canary_lines("canaryUNKNOWN-session")
        bq = bearer_query()
        assert await seen.raw(port, f"/dashboard?{bq}", *bad) == 302
        assert await seen.raw(port, f"/dashboard?{bq}", *bad, accept="application/json") == 401
        for token in ("api-500", "api-nonjson", "api-crlf", "api-reset", "api-302"):
            lines = canary_lines(token, debug=CANARY_BEARER)
            assert await seen.raw(port, f"/dashboard?{bearer_query()}", *lines) == 503
        huge = f"Cookie: session={CANARY_SESSION}; pad=" + "p" * 9000
        assert await seen.raw(port, f"/dashboard?{q}", huge) == 431
        bad_path = f"/dashboard/%2f{CANARY_SESSION}?{q}"
        assert await seen.raw(port, bad_path, *good) == 400
        dup = f"Cookie: session={CANARY_SESSION}; session={CANARY_BEARER}"
        assert await seen.raw(port, f"/dashboard?{q}", dup) == 400
        async with (
            aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as session,
            session.ws_connect(
                f"http://127.0.0.1:{port}/dashboard/ws?{q}",
                headers={
                    "Cookie": f"session={CANARY_SESSION}",
                    "Authorization": f"Bearer {CANARY_BEARER}",
                },
            ) as ws,
        ):
            greeting = await ws.receive(timeout=5)
            assert greeting.data == "hello u-42"
        process.signal(signal.SIGTERM)
        assert await process.wait_exit() == 0
    finally:
        process.kill()
    output = process.output
    assert '"gateway started"' in output
    assert output.count('"request"') >= 10, output[-2000:]
    assert occurrences(output) == {}
    for body in seen.bodies:
        for canary in CANARIES:
            assert canary.encode() not in body, body[:400]
