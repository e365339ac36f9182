"""TLS to the backends (gateway/upstream_tls.py): verified against a private CA, by host name or
server_name, mutual TLS; anything unverifiable is a 502 with the reason logged."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import trustme
from aiohttp import web

from tests.support.backends import FrontendSeen, build_frontend
from tests.support.certs import write_pair
from tests.support.harness import GOOD, GatewayFactory, LogBuffer

HttpsFrontend = Callable[..., Any]


@pytest.fixture
def client_ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
async def https_frontend(
    ca: trustme.CA, client_ca: trustme.CA, tmp_path: Path
) -> AsyncIterator[HttpsFrontend]:
    """Start the test frontend over https with a certificate for `hosts`, optionally demanding
    a client certificate from client_ca; returns its https URL."""
    runners: list[web.AppRunner] = []

    async def start(*hosts: str, demand_client_cert: bool = False) -> str:
        pair = write_pair(ca, tmp_path / "upstream", "frontend", *hosts)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(pair.cert_file, pair.key_file)
        if demand_client_cert:
            context.verify_mode = ssl.CERT_REQUIRED
            client_ca.configure_trust(context)
        runner = web.AppRunner(build_frontend(FrontendSeen()), access_log=None)
        await runner.setup()
        runners.append(runner)
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
        await site.start()
        port = next(a[1] for a in runner.addresses if isinstance(a, tuple))
        return f"https://localhost:{port}"

    yield start
    for runner in runners:
        await runner.cleanup()


def ca_file(ca: trustme.CA, tmp_path: Path) -> str:
    path = tmp_path / "internal-ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


def client_pair(client_ca: trustme.CA, tmp_path: Path) -> dict[str, str]:
    pair = write_pair(client_ca, tmp_path / "client", "gateway", "gateway.internal")
    return {"client_cert": str(pair.cert_file), "client_key": str(pair.key_file)}


async def status_of(port: int, path: str = "/hello") -> int:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{port}{path}", headers={"Cookie": f"session={GOOD}"}) as r,
    ):
        return r.status


@pytest.mark.parametrize(
    ("hosts", "tls", "status", "logged"),
    [
        (("localhost",), "private-ca", 200, None),
        (("localhost",), None, 502, "unable to get local issuer certificate"),
        (("other.test",), "private-ca", 502, "Hostname mismatch"),
        (("other.test",), "server-name", 200, None),
    ],
    ids=["private-ca", "system-store-refuses", "wrong-host-name", "server-name"],
)
async def test_https_upstream_is_always_verified(
    gateway_factory: GatewayFactory,
    https_frontend: HttpsFrontend,
    ca: trustme.CA,
    tmp_path: Path,
    log_output: LogBuffer,
    hosts: tuple[str, ...],
    tls: str | None,
    status: int,
    logged: str | None,
) -> None:
    """An upstream is served only when its certificate chains to the trusted CA and names the
    host (or server_name); otherwise 502, with OpenSSL's reason on the log line."""
    upstream = await https_frontend(*hosts)
    settings: dict[str, str] | None = None
    if tls is not None:
        settings = {"ca_file": ca_file(ca, tmp_path)}
        if tls == "server-name":
            settings["server_name"] = "other.test"
    gw = await gateway_factory(upstream, upstream_tls=settings)
    assert await status_of(gw.port) == status
    if logged is not None:
        lines = [x for x in log_output.getvalue().splitlines() if "upstream tls failed" in x]
        assert lines and logged in lines[0]


@pytest.mark.parametrize("with_client_cert", [True, False])
async def test_mutual_tls_to_an_upstream_that_demands_a_client_certificate(
    gateway_factory: GatewayFactory,
    https_frontend: HttpsFrontend,
    ca: trustme.CA,
    client_ca: trustme.CA,
    tmp_path: Path,
    with_client_cert: bool,
) -> None:
    """With client_cert/client_key the gateway is let in; without them the upstream refuses
    the handshake and the client gets 502."""
    upstream = await https_frontend("localhost", demand_client_cert=True)
    settings = {"ca_file": ca_file(ca, tmp_path)}
    if with_client_cert:
        settings |= client_pair(client_ca, tmp_path)
    gw = await gateway_factory(upstream, upstream_tls=settings)
    assert await status_of(gw.port) == (200 if with_client_cert else 502)


async def test_route_upstream_tls_and_websockets_over_https(
    gateway_factory: GatewayFactory,
    https_frontend: HttpsFrontend,
    ca: trustme.CA,
    client_ca: trustme.CA,
    tmp_path: Path,
) -> None:
    """A route's own upstream_tls (mTLS) is used for its plain requests and its WebSockets."""
    upstream = await https_frontend("localhost", demand_client_cert=True)
    route = {
        "prefix": "/secure",
        "upstream": upstream,
        "strip_prefix": True,
        "upstream_tls": {"ca_file": ca_file(ca, tmp_path), **client_pair(client_ca, tmp_path)},
    }
    gw = await gateway_factory(routes=[route])
    assert await status_of(gw.port, "/secure/hello") == 200
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(f"http://127.0.0.1:{gw.port}/secure/ws") as ws,
    ):
        assert (await ws.receive(timeout=5)).data == "hello anonymous"


async def test_client_certificate_is_read_again_on_reload(
    gateway_factory: GatewayFactory,
    client_ca: trustme.CA,
    ca: trustme.CA,
    tmp_path: Path,
    log_output: LogBuffer,
) -> None:
    """Pools.reload_tls (what SIGHUP calls) loads a renewed client certificate, and refuses a
    broken one with the old kept."""
    settings = {"ca_file": ca_file(ca, tmp_path), **client_pair(client_ca, tmp_path)}
    gw = await gateway_factory(upstream_tls=settings)
    gw.running.pools.reload_tls()
    assert "upstream client certificate reloaded" in log_output.getvalue()
    Path(settings["client_key"]).write_text("not a key\n")
    gw.running.pools.reload_tls()
    assert "upstream client certificate refused; the previous one stays" in log_output.getvalue()
