"""An app behind the gateway that checks its assertion as a careful app would: with joserfc (a JOSE
library independent of the gateway's PyJWT), against the JWKS it fetches from the gateway.

It answers every request with JSON saying whether the token verified, its header and claims, and
the request headers it received, so a test sees exactly what the app could rely on.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet
from joserfc.jws import extract_compact

from gateway.assertion import JWKS_PATH
from gateway.config import DEFAULT_ASSERTION_HEADER

ISSUER = "hamrah-gateway"


@dataclass
class VerifyingApp:
    """Where the JWKS is, what the app expects, and every verification result so far."""

    gateway_url: str = ""
    audience: str | None = None
    header: str = DEFAULT_ASSERTION_HEADER
    results: list[dict[str, Any]] = field(default_factory=list)
    jwks_fetches: int = 0
    _keys: KeySet | None = None

    async def key_set(self, kid: str) -> KeySet:
        """The gateway's keys, fetched again when a token names a kid not yet seen."""
        known = self._keys is not None and any(key.kid == kid for key in self._keys)
        if self._keys is None or not known:
            async with (
                aiohttp.ClientSession() as session,
                session.get(self.gateway_url + JWKS_PATH) as response,
            ):
                assert response.status == 200, response.status
                self._keys = KeySet.import_key_set(await response.json())
                self.jwks_fetches += 1
        return self._keys

    async def verify(self, request: web.Request) -> dict[str, Any]:
        values = request.headers.getall(self.header, [])
        result: dict[str, Any] = {
            "path": request.path,
            "assertions": len(values),
            "headers": [[k, v] for k, v in request.headers.items()],
            "verified": False,
        }
        if len(values) == 1:
            try:
                result |= await self._check(values[0], request)
            except JoseError as exc:
                result["error"] = f"{type(exc).__name__}: {exc}"
        self.results.append(result)
        return result

    async def _check(self, value: str, request: web.Request) -> dict[str, Any]:
        kid = str(extract_compact(value.encode()).protected.get("kid", ""))
        keys = await self.key_set(kid)
        token = jwt.decode(value, keys, algorithms=["ES256"])
        audience = self.audience or f"http://{request.headers['Host']}"
        jwt.JWTClaimsRegistry(
            now=int(time.time()),
            iss={"essential": True, "value": ISSUER},
            aud={"essential": True, "value": audience},
            exp={"essential": True},
            iat={"essential": True},
            sub={"essential": True},
        ).validate(token.claims)
        return {"verified": True, "header": dict(token.header), "claims": dict(token.claims)}


def build_verifying_app(state: VerifyingApp) -> web.Application:
    async def handle(request: web.Request) -> web.Response:
        return web.json_response(await state.verify(request))

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    return app
