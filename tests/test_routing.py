"""Routes: the longest matching prefix picks the upstream, with or without strip_prefix."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest

from tests.support.backends import FrontendSeen, build_frontend
from tests.support.harness import GOOD, Backend, GatewayFactory, Gw, serve
from tests.support.process import free_port
from tests.support.rawhttp import exchange, get


@pytest.fixture
async def second() -> AsyncIterator[Backend]:
    """Another real upstream (the API behind /api)."""
    state = FrontendSeen()
    runner, port = await serve(build_frontend(state))
    yield Backend(state, port)
    await runner.cleanup()


async def routed(gateway_factory: GatewayFactory, second: Backend, strip: bool) -> Gw:
    return await gateway_factory(
        routes=[
            {"prefix": "/api", "upstream": second.url, "strip_prefix": strip},
            {"prefix": "/api/v2/legacy", "upstream": second.url + "/old", "strip_prefix": True},
        ],
        protect=["/dashboard", "/api/private"],
    )


@pytest.mark.parametrize(
    ("strip", "target", "arrives"),
    [
        (False, "/api/users/me?x=1", "/api/users/me?x=1"),
        (True, "/api/users/me?x=1", "/users/me?x=1"),
        (True, "/api", "/"),
        (True, "/API/Users", "/Users"),
        (True, "/api/./users/../me", "/me"),
        (True, "/api/v2/legacy/item", "/old/item"),
    ],
    ids=["keep", "strip", "strip-to-root", "case", "normalized", "longest-route"],
)
async def test_route_reaches_its_upstream(
    gateway_factory: GatewayFactory, second: Backend, strip: bool, target: str, arrives: str
) -> None:
    """A routed path goes to the route's upstream with the prefix kept or stripped."""
    gw = await routed(gateway_factory, second, strip)
    response = await exchange(gw.port, get(target))
    assert response.status == 200
    assert json.loads(response.body)["raw_path"] == arrives
    assert second.state.seen and not gw.seen.seen


@pytest.mark.parametrize("target", ["/apix", "/ap", "/", "/dashboard-api"])
async def test_other_paths_go_to_the_default_upstream(
    gateway_factory: GatewayFactory, second: Backend, target: str
) -> None:
    """Routes match on segment boundaries; everything else goes to the top-level upstream."""
    gw = await routed(gateway_factory, second, strip=True)
    response = await exchange(gw.port, get(target))
    assert response.status == 200
    assert gw.seen.seen and not second.state.seen


async def test_rules_apply_on_routed_paths(
    gateway_factory: GatewayFactory, second: Backend
) -> None:
    """Auth is decided on the same normalized path as routing: a protected route needs a session."""
    gw = await routed(gateway_factory, second, strip=True)
    assert (await exchange(gw.port, get("/api/private/x", "Accept: text/html"))).status == 302
    assert (await exchange(gw.port, get("/api/%2e/private/x", "Accept: text/html"))).status == 302
    assert not second.state.seen
    ok = await exchange(gw.port, get("/api/private/x", f"Cookie: session={GOOD}"))
    assert ok.status == 200
    assert json.loads(ok.body)["raw_path"] == "/private/x"


async def test_route_timeout_overrides_upstream_timeout(
    gateway_factory: GatewayFactory, second: Backend
) -> None:
    """A route's own timeout applies to it: 504 after it, while the default stays longer."""
    gw = await gateway_factory(
        upstream_timeout=5,
        routes=[{"prefix": "/api", "upstream": second.url, "strip_prefix": True, "timeout": 0.3}],
    )
    assert (await exchange(gw.port, get("/api/slow?delay=2"))).status == 504
    assert (await exchange(gw.port, get("/slow?delay=0.5"))).status == 200


async def test_unreachable_route_is_502_and_named_in_readyz(
    gateway_factory: GatewayFactory,
) -> None:
    """A route whose upstream is down answers 502, and /readyz names it."""
    dead = f"http://127.0.0.1:{free_port()}"
    gw = await gateway_factory(
        admin_listen="127.0.0.1:0", routes=[{"prefix": "/api", "upstream": dead}]
    )
    assert (await exchange(gw.port, get("/api/x"))).status == 502
    assert (await exchange(gw.port, get("/x"))).status == 200
    assert gw.running.admin_port is not None
    response = await exchange(gw.running.admin_port, get("/readyz"))
    assert response.status == 503
    assert "route /api" in json.loads(response.body)["failing"]
