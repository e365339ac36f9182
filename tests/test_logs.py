"""Logs: one JSON line per request with the documented fields, and redaction on every line."""

from __future__ import annotations

import io
import json
import logging

import pytest
from structlog.testing import capture_logs

from gateway.logs import REDACTED, Redactor, bind_secrets
from tests.support.harness import GOOD, GatewayFactory, Gw
from tests.support.process import free_port
from tests.support.rawhttp import exchange, get


def request_lines(output: io.StringIO) -> list[dict[str, object]]:
    lines = [json.loads(line) for line in output.getvalue().splitlines() if line.strip()]
    return [line for line in lines if line.get("event") == "request"]


async def test_one_json_line_per_request_with_documented_fields(
    gw: Gw, log_output: io.StringIO
) -> None:
    """Each request logs one JSON line: method, path, status, duration, client ip, id, outcome."""
    await exchange(gw.port, get("/public/page?x=1", "X-Request-ID: rid-1"))
    await exchange(gw.port, get("/dashboard", "Accept: text/html", "X-Request-ID: rid-2"))
    await exchange(gw.port, get("/dashboard", f"Cookie: session={GOOD}", "X-Request-ID: rid-3"))
    await exchange(gw.port, get("/dashboard", f"Cookie: session={GOOD}", "X-Request-ID: rid-4"))
    lines = request_lines(log_output)
    assert [line["request_id"] for line in lines] == ["rid-1", "rid-2", "rid-3", "rid-4"]
    assert [line["auth"] for line in lines] == ["public", "denied", "validated", "cached"]
    first = lines[0]
    assert first["method"] == "GET"
    assert first["path"] == "/public/page"
    assert first["status"] == 200
    assert first["client_ip"] == "127.0.0.1"
    assert isinstance(first["duration_ms"], float)
    assert first["level"] == "info"
    assert "timestamp" in first


async def test_auth_error_outcome_is_logged(
    gateway_factory: GatewayFactory, log_output: io.StringIO
) -> None:
    """A failing auth API is logged with outcome error and status 503."""
    gw = await gateway_factory(auth=f"http://127.0.0.1:{free_port()}")
    await exchange(gw.port, get("/dashboard", f"Cookie: session={GOOD}"))
    [line] = request_lines(log_output)
    assert line["auth"] == "error"
    assert line["status"] == 503


async def test_aiohttp_access_logger_is_replaced(gw: Gw, log_output: io.StringIO) -> None:
    """No line comes from aiohttp's own access logger, only the gateway's."""
    await exchange(gw.port, get("/"))
    assert "aiohttp.access" not in log_output.getvalue()
    assert len(request_lines(log_output)) == 1


async def test_parser_refusals_are_logged_without_the_header(
    gw: Gw, log_output: io.StringIO
) -> None:
    """A request the parser refuses (431) is still logged, without the offending header."""
    canary = "c4n4ry" * 2000
    response = await exchange(gw.port, get("/", f"Cookie: session={canary}"))
    assert response.status == 431
    assert [line["status"] for line in request_lines(log_output)] == [431]
    assert "c4n4ry" not in log_output.getvalue()


@pytest.mark.parametrize(
    "text",
    [
        "Cookie: session=SECRET123; theme=dark",
        "cookie=session=SECRET123",
        "GET /x?session=SECRET123&a=1",
        "Authorization: Bearer SECRET123",
        "headers={'Authorization': 'Basic SECRET123'}",
        "Set-Cookie: session=SECRET123; HttpOnly",
        "failed for value SECRET123 in parser",
    ],
)
def test_redactor_removes_secrets_from_text(text: str) -> None:
    """Cookie, Set-Cookie and Authorization values and the request's session never survive."""
    assert "SECRET123" not in Redactor("session").scrub(text, ("SECRET123",))


@pytest.mark.parametrize(
    "key", ["cookie", "Cookie", "set-cookie", "authorization", "Authorization"]
)
def test_redactor_blanks_sensitive_keys(key: str) -> None:
    """Fields named like sensitive headers are replaced whole."""
    event = Redactor("session")(None, "info", {key: "anything", "other": "kept"})
    assert event[key] == REDACTED
    assert event["other"] == "kept"


def test_standard_library_lines_are_redacted(log_output: io.StringIO) -> None:
    """aiohttp's and asyncio's own log lines pass through the same redaction."""
    bind_secrets(["SECRETVALUE42"])
    try:
        raise ValueError("bad cookie SECRETVALUE42")
    except ValueError:
        logging.getLogger("aiohttp.server").exception(
            "Error handling request, Cookie: session=SECRETVALUE42"
        )
    bind_secrets([])
    output = log_output.getvalue()
    assert "Error handling request" in output
    assert "SECRETVALUE42" not in output


async def test_auth_failure_is_logged_as_a_warning(gateway_factory: GatewayFactory) -> None:
    """An unreachable auth API is logged as a warning naming the error kind, not the cookie."""
    gw = await gateway_factory(auth=f"http://127.0.0.1:{free_port()}")
    with capture_logs() as logs:
        await exchange(gw.port, get("/dashboard", f"Cookie: session={GOOD}"))
    warning = next(entry for entry in logs if entry["event"] == "auth api unavailable")
    assert warning["log_level"] == "warning"
    assert GOOD not in str(logs)


@pytest.mark.parametrize(
    ("where", "event", "status"),
    [("auth", "auth api unavailable", 503), ("upstream", "upstream unreachable", 502)],
)
async def test_every_line_of_a_request_carries_its_id(
    gateway_factory: GatewayFactory,
    log_output: io.StringIO,
    where: str,
    event: str,
    status: int,
) -> None:
    """A warning logged while a request is served carries that request's id (contextvars)."""
    refused = f"http://127.0.0.1:{free_port()}"
    gw = await (
        gateway_factory(auth=refused) if where == "auth" else gateway_factory(upstream=refused)
    )
    cookie = f"Cookie: session={GOOD}"
    response = await exchange(gw.port, get("/dashboard", cookie, "X-Request-ID: traced-7"))
    assert response.status == status
    lines = [json.loads(line) for line in log_output.getvalue().splitlines() if line.strip()]
    [warning] = [line for line in lines if line.get("event") == event]
    assert warning["request_id"] == "traced-7"
