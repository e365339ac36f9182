"""The plain redirect listener (gateway/redirect.py): 308 to https, 400 for a bad Host, never a
proxy and never an auth call."""

from __future__ import annotations

from pathlib import Path

import pytest
import trustme

from gateway.redirect import Redirector, https_host
from tests.support import rawhttp
from tests.support.certs import write_pair
from tests.support.harness import GOOD, GatewayFactory, Gw


@pytest.fixture
async def tls_gw(gateway_factory: GatewayFactory, tmp_path: Path) -> Gw:
    pair = write_pair(trustme.CA(), tmp_path, "site")
    tls = {
        "cert_file": str(pair.cert_file),
        "key_file": str(pair.key_file),
        "watch": False,
        "redirect_http": "127.0.0.1:0",
    }
    return await gateway_factory(tls=tls)


def plain_port(gw: Gw) -> int:
    assert gw.running.redirect_port is not None
    return gw.running.redirect_port


@pytest.mark.parametrize(
    ("request_bytes", "location"),
    [
        (
            rawhttp.get("/dashboard?tab=1", host="example.com:8080"),
            "https://example.com:{p}/dashboard?tab=1",
        ),
        (rawhttp.get("/", host="example.com."), "https://example.com.:{p}/"),
        (rawhttp.get("/x", host="127.0.0.1:8080"), "https://127.0.0.1:{p}/x"),
        (rawhttp.get("/x", host="[::1]:8080"), "https://[::1]:{p}/x"),
        (
            rawhttp.get("http://elsewhere.test/a?b", host="example.com"),
            "https://example.com:{p}/a?b",
        ),
        (rawhttp.get("//evil.test/x", host="example.com"), "https://example.com:{p}//evil.test/x"),
        (
            rawhttp.get("/upload", "Content-Length: 3", host="example.com", method="POST") + b"abc",
            "https://example.com:{p}/upload",
        ),
    ],
    ids=["path-and-query", "root-dot", "ipv4", "ipv6", "absolute-form", "double-slash", "post"],
)
async def test_every_request_gets_308_to_the_same_host_and_target_over_https(
    tls_gw: Gw, request_bytes: bytes, location: str
) -> None:
    """308 (a POST stays a POST) to https on the TLS listener's port, host and target kept."""
    response = await rawhttp.exchange(plain_port(tls_gw), request_bytes)
    assert response.status == 308
    assert response.header("Location") == location.format(p=tls_gw.port)
    assert response.header("Strict-Transport-Security") is None


@pytest.mark.parametrize(
    "host",
    [
        "evil.test/x",
        "evil.test@good.test",
        "a b",
        "host:port",
        "host:99999",
        "-bad.test",
        "a..b",
        "[::1",
        "[not-v6]",
        "",
        "x" * 300,
    ],
)
async def test_a_host_that_is_not_host_and_port_is_refused(tls_gw: Gw, host: str) -> None:
    """A Host that is not a valid host[:port] gets 400, never a redirect built from it."""
    response = await rawhttp.exchange(plain_port(tls_gw), rawhttp.get("/", host=host))
    assert response.status == 400
    assert response.header("Location") is None


async def test_no_host_is_refused(tls_gw: Gw) -> None:
    """An HTTP/1.0 request without Host has nowhere to be sent: 400."""
    response = await rawhttp.exchange(plain_port(tls_gw), b"GET / HTTP/1.0\r\n\r\n")
    assert response.status == 400


async def test_redirect_listener_never_proxies_or_authenticates(tls_gw: Gw) -> None:
    """Protected paths with a session are redirected too; neither the app nor the auth API is
    asked."""
    request = rawhttp.get("/dashboard", f"Cookie: session={GOOD}", host="example.com")
    response = await rawhttp.exchange(plain_port(tls_gw), request)
    assert response.status == 308
    assert tls_gw.seen.seen == []
    assert tls_gw.api.calls == []


def test_port_443_is_left_out_of_the_location() -> None:
    """A TLS listener on 443 makes a Location without a port."""
    assert Redirector(443)._port == ""
    assert https_host("example.com:80") == "example.com"
