"""TLS at the edge (gateway/tls.py): handshakes, versions, ALPN, HSTS, and what the app is told."""

from __future__ import annotations

import ssl
import warnings

import aiohttp
import pytest
import trustme

from tests.support import rawhttp
from tests.support.certs import PairFiles, client_context, served_serial, tls_keys
from tests.support.harness import GOOD, GatewayFactory, Gw

HSTS = "max-age=31536000"


@pytest.fixture
async def tls_gw(gateway_factory: GatewayFactory, pair: PairFiles) -> Gw:
    return await gateway_factory(tls=tls_keys(pair, watch=False))


def https(gw: Gw) -> str:
    return f"https://localhost:{gw.port}"


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
async def test_handshake_and_request_over_each_supported_version(
    tls_gw: Gw, ca: trustme.CA, pair: PairFiles, version: ssl.TLSVersion
) -> None:
    """TLS 1.2 and 1.3 clients complete a handshake, get ALPN http/1.1 (not h2) and are served."""
    context = client_context(ca)
    context.set_alpn_protocols(["h2", "http/1.1"])
    context.minimum_version = context.maximum_version = version
    serial, alpn, spoken = await served_serial(tls_gw.port, context)
    assert (serial, alpn) == (pair.serial, "http/1.1")
    assert spoken == {ssl.TLSVersion.TLSv1_2: "TLSv1.2", ssl.TLSVersion.TLSv1_3: "TLSv1.3"}[version]
    async with (
        aiohttp.ClientSession() as session,
        session.get(https(tls_gw) + "/hello", ssl=context) as response,
    ):
        assert response.status == 200


@pytest.mark.parametrize(
    ("min_version", "offered", "served"),
    [
        ("1.2", ssl.TLSVersion.TLSv1_1, False),
        ("1.3", ssl.TLSVersion.TLSv1_2, False),
        ("1.3", ssl.TLSVersion.TLSv1_3, True),
    ],
)
async def test_versions_below_min_version_are_refused(
    gateway_factory: GatewayFactory,
    ca: trustme.CA,
    pair: PairFiles,
    min_version: str,
    offered: ssl.TLSVersion,
    served: bool,
) -> None:
    """A client offering only a version below min_version gets no handshake (1.1 never)."""
    gw = await gateway_factory(tls=tls_keys(pair, watch=False, min_version=min_version))
    context = client_context(ca)
    # The client's own floor is lowered so the refusal is the gateway's, not the client's.
    context.set_ciphers("DEFAULT:@SECLEVEL=0")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # TLSv1_1 is, which is the point
        context.minimum_version = context.maximum_version = offered
    if served:
        assert (await served_serial(gw.port, context))[0] == pair.serial
        return
    # asyncio closes a connection whose handshake failed before its alert is flushed: the client
    # sees either the alert or the connection end, never a handshake.
    with pytest.raises((ssl.SSLError, ConnectionError)):
        await served_serial(gw.port, context)


async def test_app_is_told_the_request_came_over_https(tls_gw: Gw, ca: trustme.CA) -> None:
    """X-Forwarded-Proto is https on a TLS listener, even when an untrusted client says http."""
    async with (
        aiohttp.ClientSession() as session,
        session.get(
            https(tls_gw) + "/echo", ssl=client_context(ca), headers={"X-Forwarded-Proto": "http"}
        ) as response,
    ):
        seen = await response.json()
    protos = [value for name, value in seen["headers"] if name.lower() == "x-forwarded-proto"]
    assert protos == ["https"]


@pytest.mark.parametrize(
    ("target", "headers", "status"),
    [
        ("/hello", {}, 200),
        ("/dashboard", {"Accept": "text/html"}, 302),
        ("/dashboard", {"Accept": "application/json"}, 401),
        ("/dashboard", {"Cookie": f"session={GOOD}"}, 200),
        ("/a%2Fb", {}, 400),
        ("/redirect", {}, 302),
    ],
)
async def test_hsts_on_every_answer_relayed_or_own(
    tls_gw: Gw, ca: trustme.CA, target: str, headers: dict[str, str], status: int
) -> None:
    """Every answer over TLS carries Strict-Transport-Security, the app's and the gateway's."""
    async with (
        aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as session,
        session.get(
            https(tls_gw) + target, ssl=client_context(ca), headers=headers, allow_redirects=False
        ) as response,
    ):
        assert response.status == status
        assert response.headers.getall("Strict-Transport-Security") == [HSTS]


async def test_hsts_on_parse_error_answers(tls_gw: Gw, ca: trustme.CA) -> None:
    """An answer to a request aiohttp's parser refused carries HSTS too."""
    oversized = rawhttp.get("/", "X-Big: " + "a" * 70_000)
    response = await rawhttp.exchange(tls_gw.port, oversized, tls=client_context(ca))
    assert response.status == 431
    assert response.header("Strict-Transport-Security") == HSTS


async def test_hsts_zero_sends_none(
    gateway_factory: GatewayFactory, ca: trustme.CA, pair: PairFiles
) -> None:
    """hsts: 0 turns the header off."""
    gw = await gateway_factory(tls=tls_keys(pair, watch=False, hsts=0))
    response = await rawhttp.exchange(gw.port, rawhttp.get("/hello"), tls=client_context(ca))
    assert response.status == 200
    assert response.header("Strict-Transport-Security") is None


async def test_sign_in_redirect_stays_on_the_https_origin(tls_gw: Gw, ca: trustme.CA) -> None:
    """The login redirect is a relative path, so the browser stays on https."""
    request = rawhttp.get("/dashboard?x=1", "Accept: text/html", host=f"localhost:{tls_gw.port}")
    response = await rawhttp.exchange(tls_gw.port, request, tls=client_context(ca))
    assert response.status == 302
    assert response.header("Location") == "/login?next=%2Fdashboard%3Fx%3D1"


async def test_plain_http_on_the_tls_port_gets_no_answer(tls_gw: Gw) -> None:
    """A plain-HTTP request to the TLS listener is not served."""
    assert await rawhttp.exchange_or_close(tls_gw.port, rawhttp.get("/hello")) is None
