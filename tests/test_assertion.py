"""The signed identity: an app behind the gateway verifies it with joserfc against the served JWKS.

The gateway signs with PyJWT; the app here checks with joserfc, an independent JOSE library, so a
token that passes is one any standard verifier accepts, not merely one its own library reads back.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from joserfc import jwt
from joserfc.jwk import ECKey, KeySet

from gateway.assertion import JWKS_PATH
from gateway.keys import write_new_key
from tests.support import rawhttp
from tests.support.harness import GOOD, Backend, GatewayFactory, Gw, backend
from tests.support.verifier import VerifyingApp, build_verifying_app
from tests.test_service import serving, write_config

SECRET = "assertion-test-secret-0123456789"
HEADER = "X-Gateway-Assertion"
FORGED = "eyJhbGciOiJub25lIn0.eyJzdWIiOiJhZG1pbiJ9."
HOST = "gateway.test"


@pytest.fixture
def keys(tmp_path: Path) -> list[Path]:
    """Two new P-256 key files."""
    paths = [tmp_path / "assertion-1.pem", tmp_path / "assertion-2.pem"]
    for path in paths:
        write_new_key(path)
    return paths


@pytest.fixture
async def app() -> AsyncIterator[Backend]:
    """The verifying app, on its own loopback port."""
    state = VerifyingApp()
    async with backend(state, build_verifying_app(state)) as served:
        yield served


def verifier(backend: Backend) -> VerifyingApp:
    state: VerifyingApp = backend.state
    return state


async def signing_gateway(
    gateway_factory: GatewayFactory, app: Backend, keys: list[Path], **assertion: Any
) -> Gw:
    """The gateway in front of the verifying app, signing with the first of keys."""
    overrides: dict[str, Any] = {"admin_listen": "127.0.0.1:0", "optional": ["/opt"]}
    for name in ("auth", "protect", "public", "trusted_proxies"):
        if name in assertion:
            overrides[name] = assertion.pop(name)
    overrides.setdefault("auth", {})["cache"] = {"secret": SECRET}
    gw = await gateway_factory(
        upstream=app, assertion={"keys": [str(k) for k in keys], **assertion}, **overrides
    )
    verifier(app).gateway_url = gw.url
    return gw


async def fetch(base: str, path: str, cookie: str | None = GOOD, **headers: str) -> dict[str, Any]:
    """What the app verified for one request through the gateway at base (which must relay it)."""
    if cookie is not None:
        headers["Cookie"] = f"session={cookie}"
    async with (
        aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as session,
        session.get(base + path, headers=headers, allow_redirects=False) as response,
    ):
        assert response.status == 200, await response.text()
        result: dict[str, Any] = await response.json()
        return result


def token_of(result: dict[str, Any]) -> str:
    """The assertion header's value as the app received it."""
    return str(next(v for k, v in result["headers"] if k.lower() == HEADER.lower()))


async def test_app_verifies_the_assertion_with_an_independent_library(
    gateway_factory: GatewayFactory, app: Backend, keys: list[Path]
) -> None:
    """A protected request carries an ES256 JWT that joserfc verifies against the served JWKS."""
    gw = await signing_gateway(gateway_factory, app, keys)
    result = await fetch(gw.url, "/dashboard")
    assert result["verified"], result.get("error")
    jwks = KeySet.import_key_set(await _json(gw.url + JWKS_PATH))
    signing = jwks.get_by_kid(result["header"]["kid"])
    assert isinstance(signing, ECKey)
    assert result["header"] == {"alg": "ES256", "typ": "JWT", "kid": signing.thumbprint()}
    assert result["header"]["kid"] == next(iter(jwks)).kid
    claims = result["claims"]
    assert claims["iss"] == "hamrah-gateway"
    assert claims["aud"] == gw.url
    assert claims["sub"] == "u-42"
    assert claims["email"] == "ada@example.com"
    assert claims["exp"] == claims["iat"] + 60
    assert abs(claims["iat"] - time.time()) < 5
    assert claims["sid"] == hmac.digest(SECRET.encode(), GOOD.encode(), hashlib.sha256).hex()
    assert GOOD not in token_of(result)
    assert set(claims) == {"iss", "aud", "sub", "email", "iat", "exp", "jti", "sid"}


async def test_configured_issuer_audience_ttl_and_header_name(
    gateway_factory: GatewayFactory, app: Backend, keys: list[Path]
) -> None:
    """issuer, audience, ttl and header from the config are what the token and request carry."""
    verifier(app).header = "X-Signed-Identity"
    verifier(app).audience = "https://app.example"
    gw = await signing_gateway(
        gateway_factory,
        app,
        keys,
        header="X-Signed-Identity",
        audience="https://app.example",
        ttl=120,
    )
    result = await fetch(gw.url, "/dashboard")
    assert result["verified"], result.get("error")
    assert result["claims"]["aud"] == "https://app.example"
    assert result["claims"]["exp"] - result["claims"]["iat"] == 120


async def test_every_jti_is_unique_across_sessions(
    gateway_factory: GatewayFactory, app: Backend, keys: list[Path]
) -> None:
    """Each session gets its own token with its own jti and sid."""
    gw = await signing_gateway(gateway_factory, app, keys)
    tokens = [f"session-{n:02d}-0123456789" for n in range(5)]
    for n, token in enumerate(tokens):
        gw.api.sessions[token] = {"id": f"u-{n}", "email": f"u{n}@example.com"}
    results = [await fetch(gw.url, "/dashboard", token) for token in tokens]
    assert all(r["verified"] for r in results)
    assert len({r["claims"]["jti"] for r in results}) == len(tokens)
    assert len({r["claims"]["sid"] for r in results}) == len(tokens)
    assert [r["claims"]["sub"] for r in results] == [f"u-{n}" for n in range(5)]


CLAIMS = {
    "sub": "id",
    "email": "email",
    "roles": "roles",
    "groups": "groups",
    "verified": "email_verified",
    "age": "age",
    "org": "org",
    "team": "org.team",
    "absent": "not_there",
}


@pytest.mark.parametrize(
    ("user", "expected"),
    [
        (
            {
                "id": "u-1",
                "email": "a@b.c",
                "roles": ["user", "admin"],
                "groups": [],
                "email_verified": True,
                "age": 37,
                "org": {"team": "core", "size": 4},
            },
            {
                "sub": "u-1",
                "email": "a@b.c",
                "roles": ["user", "admin"],
                "groups": [],
                "verified": True,
                "age": 37,
                "org": {"team": "core", "size": 4},
                "team": "core",
            },
        ),
        ({"id": 7, "email": None, "groups": None}, {"sub": "7"}),
        ({"id": True, "roles": ["x"], "age": 1.5}, {"sub": "true", "roles": ["x"], "age": 1.5}),
    ],
    ids=["types-kept", "null-left-out", "scalar-sub"],
)
async def test_configured_claims_keep_their_json_types(
    gateway_factory: GatewayFactory,
    app: Backend,
    keys: list[Path],
    user: dict[str, Any],
    expected: dict[str, Any],
) -> None:
    """Configured claims keep JSON types; missing or null fields are left out; sub is a string."""
    gw = await signing_gateway(gateway_factory, app, keys, claims=CLAIMS)
    gw.api.sessions["typed-session-0123456789"] = user
    result = await fetch(gw.url, "/dashboard", "typed-session-0123456789")
    assert result["verified"], result.get("error")
    registered = {"iss", "aud", "iat", "exp", "jti", "sid"}
    assert {k: v for k, v in result["claims"].items() if k not in registered} == expected


@pytest.mark.parametrize(
    "user",
    [
        {"id": "u-1", "name": "Ada\r\nX-Injected: yes"},
        {"id": "u-1", "name": "Ada\nLovelace"},
        {"id": "u-1", "name": "Ada\x00"},
        {"id": "u-1", "roles": ["user", "admin\r\n"]},
        {"id": "u-1", "org": {"team": "core\n"}},
        {"name": "Ada"},
        {"id": {"nested": "object"}},
        {"id": ["u-1"]},
    ],
    ids=["crlf", "lf", "nul", "in-list", "in-object", "no-sub", "object-sub", "list-sub"],
)
@pytest.mark.parametrize("path", ["/dashboard", "/opt"])
async def test_unrepresentable_claim_is_503_and_the_app_is_not_contacted(
    gateway_factory: GatewayFactory,
    app: Backend,
    keys: list[Path],
    user: dict[str, Any],
    path: str,
) -> None:
    """CR/LF/NUL in any claim string, or no usable sub, is refused with 503 on protect and
    optional paths alike; the app never sees the request."""
    claims = {"sub": "id", "name": "name", "roles": "roles", "org": "org"}
    gw = await signing_gateway(
        gateway_factory, app, keys, claims=claims, auth={"identity_headers": {}}
    )
    gw.api.sessions["odd-session-0123456789"] = user
    response = await rawhttp.exchange(
        gw.port,
        rawhttp.get(path, "Cookie: session=odd-session-0123456789", "Accept: application/json"),
    )
    assert response.status == 503
    assert verifier(app).results == []


SPELLINGS = [
    "X-Gateway-Assertion",
    "x-gateway-assertion",
    "X_Gateway_Assertion",
    "X-GATEWAY_ASSERTION",
]


@pytest.mark.parametrize("spelling", SPELLINGS)
@pytest.mark.parametrize(
    ("path", "cookie", "signed"),
    [
        ("/", None, False),
        ("/", GOOD, False),
        ("/dashboard/public", GOOD, False),
        ("/opt", None, False),
        ("/opt", "not-a-session-0123456789", False),
        ("/opt", GOOD, True),
        ("/dashboard", GOOD, True),
    ],
    ids=[
        "public",
        "public-with-session",
        "public-exception",
        "optional-anonymous",
        "optional-invalid",
        "optional-signed-in",
        "protected",
    ],
)
async def test_client_copies_are_stripped_on_every_path(
    gateway_factory: GatewayFactory,
    app: Backend,
    keys: list[Path],
    spelling: str,
    path: str,
    cookie: str | None,
    signed: bool,
) -> None:
    """A client's assertion header, in any spelling and twice over, never reaches the app; only a
    signed-in request on a protect or optional path carries one, the gateway's, and it verifies."""
    gw = await signing_gateway(gateway_factory, app, keys)
    lines = [f"{spelling}: {FORGED}", f"{HEADER}: {FORGED}"]
    if cookie is not None:
        lines.append(f"Cookie: session={cookie}")
    response = await rawhttp.exchange(gw.port, rawhttp.get(path, *lines, host=HOST))
    assert response.status == 200, response.raw_head
    result = verifier(app).results[-1]
    spelled = [v for k, v in result["headers"] if k.lower().replace("_", "-") == HEADER.lower()]
    assert FORGED not in spelled
    assert len(spelled) == (1 if signed else 0)
    assert result["verified"] is signed, result.get("error")


async def test_connection_naming_the_header_cannot_remove_the_gateways_copy(
    gateway_factory: GatewayFactory, app: Backend, keys: list[Path]
) -> None:
    """A client's Connection header naming the assertion header drops only the client's copy."""
    gw = await signing_gateway(gateway_factory, app, keys)
    lines = [f"Connection: {HEADER}", f"{HEADER}: {FORGED}", f"Cookie: session={GOOD}"]
    response = await rawhttp.exchange(gw.port, rawhttp.get("/dashboard", *lines, host=HOST))
    assert response.status == 200, response.raw_head
    result = verifier(app).results[-1]
    assert result["assertions"] == 1
    assert result["verified"], result.get("error")


async def test_assertion_is_off_when_not_configured(
    gateway_factory: GatewayFactory, app: Backend
) -> None:
    """Without `assertion:` no token is added and the JWKS path is the app's like any other."""
    gw = await gateway_factory(upstream=app)
    verifier(app).gateway_url = gw.url
    result = await fetch(gw.url, "/dashboard")
    assert result["assertions"] == 0
    async with (
        aiohttp.ClientSession() as session,
        session.get(gw.url + JWKS_PATH) as response,
    ):
        assert response.status == 200
        assert (await response.json())["path"] == JWKS_PATH


async def _json(url: str) -> Any:
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        assert response.status == 200
        return await response.json()


async def test_jwks_is_answered_by_the_gateway_before_any_rule(
    gateway_factory: GatewayFactory, app: Backend, keys: list[Path]
) -> None:
    """The JWKS lists every key's public half, is public and cacheable even under protect: [/],
    and never reaches the app."""
    gw = await signing_gateway(gateway_factory, app, keys, protect=["/"], public=["/login"])
    async with (
        aiohttp.ClientSession() as session,
        session.get(gw.url + JWKS_PATH, headers={"Accept": "text/html"}) as response,
    ):
        assert response.status == 200
        assert response.headers["Cache-Control"] == "public, max-age=300"
        assert response.content_type == "application/json"
        assert "Server" not in response.headers
        body = await response.json()
    assert verifier(app).results == []
    assert [set(k) for k in body["keys"]] == [{"kty", "crv", "x", "y", "kid", "alg", "use"}] * 2
    assert all(
        (k["kty"], k["crv"], k["alg"], k["use"]) == ("EC", "P-256", "ES256", "sig")
        for k in body["keys"]
    )
    expected = [ECKey.import_key(path.read_text()).thumbprint() for path in keys]
    assert [k["kid"] for k in body["keys"]] == expected


@pytest.mark.parametrize(
    ("method", "status"), [("GET", 200), ("HEAD", 200), ("POST", 405), ("DELETE", 405)]
)
async def test_jwks_methods(
    gateway_factory: GatewayFactory, app: Backend, keys: list[Path], method: str, status: int
) -> None:
    """GET and HEAD are answered; any other method gets 405 with Allow, from the gateway."""
    gw = await signing_gateway(gateway_factory, app, keys)
    data = rawhttp.get(JWKS_PATH, "Content-Length: 0", method=method)
    response = await rawhttp.exchange(gw.port, data, method)
    assert response.status == status
    if status == 405:
        assert response.header("Allow") == "GET, HEAD"
    assert verifier(app).results == []


async def test_admin_listener_serves_the_same_jwks(
    gateway_factory: GatewayFactory, app: Backend, keys: list[Path]
) -> None:
    """/jwks.json on the admin listener is the main listener's JWKS; without assertion it is 404."""
    gw = await signing_gateway(gateway_factory, app, keys)
    admin = f"http://127.0.0.1:{gw.running.admin_port}"
    assert await _json(admin + "/jwks.json") == await _json(gw.url + JWKS_PATH)
    plain = await gateway_factory(admin_listen="127.0.0.1:0")
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{plain.running.admin_port}/jwks.json") as response,
    ):
        assert response.status == 404


async def test_token_is_reused_while_more_than_half_its_ttl_is_left(
    gateway_factory: GatewayFactory, app: Backend, keys: list[Path]
) -> None:
    """The same session and audience get the same token until half its ttl has passed, then a new
    one; another audience (Host) gets its own token."""
    gw = await signing_gateway(gateway_factory, app, keys, ttl=10)
    first = await fetch(gw.url, "/dashboard")
    again = await fetch(gw.url, "/dashboard")
    assert token_of(again) == token_of(first)
    other_host = await fetch(gw.url, "/dashboard", Host="other.test")
    assert token_of(other_host) != token_of(first)
    half_life = first["claims"]["iat"] + 5
    async with asyncio.timeout(10):
        while True:
            asked_at = time.time()
            latest = await fetch(gw.url, "/dashboard")
            if token_of(latest) != token_of(first):
                break
            assert asked_at < half_life + 0.5, "the token outlived half its ttl"
            await asyncio.sleep(0.1)
    assert time.time() >= half_life
    assert latest["verified"]
    assert latest["claims"]["iat"] >= half_life


async def test_sighup_rotation_signs_with_the_new_key_and_old_tokens_still_verify(
    tmp_path: Path, app: Backend, auth_api: Backend, keys: list[Path]
) -> None:
    """After SIGHUP with a new first key, new tokens carry its kid, a token signed before with a
    key still listed verifies against the JWKS, and a reload with a bad key keeps the keys."""
    old, new = keys
    assertion: dict[str, Any] = {"keys": [str(old)]}
    async with serving(tmp_path, app, auth_api, assertion=assertion) as (process, port):
        verifier(app).gateway_url = f"http://127.0.0.1:{port}"
        gw_url = verifier(app).gateway_url
        before = await fetch(gw_url, "/dashboard")
        assert before["verified"], before.get("error")
        old_kid = before["header"]["kid"]

        write_config(
            tmp_path / "gw.yaml", app, auth_api, port, assertion={"keys": [str(new), str(old)]}
        )
        process.signal(signal.SIGHUP)
        await process.wait_for_output('"config reloaded"')
        after = await fetch(gw_url, "/dashboard")
        assert after["verified"], after.get("error")
        assert after["header"]["kid"] != old_kid
        jwks = KeySet.import_key_set(await _json(gw_url + JWKS_PATH))
        assert [k.kid for k in jwks] == [after["header"]["kid"], old_kid]
        jwt.decode(token_of(before), jwks, algorithms=["ES256"])

        public = tmp_path / "public.pem"
        public.write_text(ECKey.import_key(new.read_text()).as_pem(private=False).decode())
        write_config(tmp_path / "gw.yaml", app, auth_api, port, assertion={"keys": [str(public)]})
        process.signal(signal.SIGHUP)
        await process.wait_for_output("reload refused")
        assert "assertion.keys[0]" in process.output
        still = await fetch(gw_url, "/dashboard")
        assert still["header"]["kid"] == after["header"]["kid"]
        assert still["verified"]


def readme_snippet(language: str, first_line: str) -> str:
    """The README's code block in language that starts with first_line."""
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    start = readme.index(f"```{language}\n{first_line}") + len(language) + 4
    return readme[start : readme.index("```", start)]


async def test_readme_python_snippet_verifies_a_real_token(
    gateway_factory: GatewayFactory, app: Backend, keys: list[Path]
) -> None:
    """The README's PyJWT snippet, run as written, accepts the gateway's token and refuses a
    forged one."""
    verifier(app).audience = "https://app.example"
    gw = await signing_gateway(gateway_factory, app, keys, audience="https://app.example")
    snippet = readme_snippet("python", "import jwt")
    snippet = snippet.replace("https://app.example/.well-known", f"{gw.url}/.well-known")
    namespace: dict[str, Any] = {}
    exec(compile(snippet, "README.md", "exec"), namespace)
    result = await fetch(gw.url, "/dashboard")
    identity = namespace["gateway_identity"]
    claims = await asyncio.to_thread(identity, {HEADER: token_of(result)})
    assert claims is not None
    assert claims["sub"] == "u-42"
    assert await asyncio.to_thread(identity, {HEADER: FORGED}) is None
    assert await asyncio.to_thread(identity, {}) is None


@pytest.mark.parametrize(
    ("trusted", "expected"),
    [(["127.0.0.1"], "https://app.example"), ([], f"http://{HOST}")],
    ids=["trusted-proxy", "untrusted-peer"],
)
async def test_default_audience_is_the_origin_the_app_is_told(
    gateway_factory: GatewayFactory,
    app: Backend,
    keys: list[Path],
    trusted: list[str],
    expected: str,
) -> None:
    """Without a configured audience, aud is X-Forwarded-Proto://X-Forwarded-Host from a trusted
    proxy, and http://Host from anyone else."""
    verifier(app).audience = expected
    gw = await signing_gateway(gateway_factory, app, keys, trusted_proxies=trusted)
    lines = ["X-Forwarded-Proto: https", "X-Forwarded-Host: app.example", f"Cookie: session={GOOD}"]
    response = await rawhttp.exchange(gw.port, rawhttp.get("/dashboard", *lines, host=HOST))
    assert response.status == 200, response.raw_head
    result = verifier(app).results[-1]
    assert result["verified"], result.get("error")
    assert result["claims"]["aud"] == expected


async def test_websocket_handshake_carries_the_assertion(
    gateway_factory: GatewayFactory, keys: list[Path]
) -> None:
    """A signed-in WebSocket handshake reaches the app with a token that verifies."""
    gw = await gateway_factory(assertion={"keys": [str(keys[0])]})
    async with (
        aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as session,
        session.ws_connect(gw.url + "/dashboard/ws", headers={"Cookie": f"session={GOOD}"}) as ws,
    ):
        assert (await ws.receive_str(timeout=5)) == "hello u-42"
    entry = gw.seen.seen[-1]
    token = next(v for k, v in entry["headers"] if k.lower() == HEADER.lower())
    jwks = KeySet.import_key_set(await _json(gw.url + JWKS_PATH))
    assert jwt.decode(token, jwks, algorithms=["ES256"]).claims["sub"] == "u-42"
