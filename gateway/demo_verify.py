"""The demo frontend's side of the signed identity: verify the gateway's assertion as apps should.

Identity headers say who is signed in only if nothing but the gateway can reach the app; the
assertion says it with a signature. The keys come from the gateway's JWKS, fetched through the
gateway and kept for its max-age; a token naming a key not seen yet fetches them again, at most
once per REFETCH_SECONDS, so forged kids cannot turn every request into a fetch.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from typing import Any

import aiohttp
import jwt
import structlog

from gateway.config import DEFAULT_ASSERTION_HEADER, DEFAULT_ISSUER
from gateway.keys import ALGORITHM

JWKS_MAX_AGE = 300.0
REFETCH_SECONDS = 5.0
REQUIRED_CLAIMS = ("iss", "aud", "sub", "iat", "exp")

log = structlog.get_logger(__name__)


class AssertionCheck:
    """Verifies the assertion header against the gateway's keys: signature, iss, aud, exp."""

    def __init__(
        self,
        jwks_url: str,
        audience: str,
        issuer: str = DEFAULT_ISSUER,
        header: str = DEFAULT_ASSERTION_HEADER,
    ) -> None:
        self.jwks_url = jwks_url
        self.audience = audience
        self.issuer = issuer
        self.header = header
        self._keys: jwt.PyJWKSet | None = None
        self._fetched_at = -REFETCH_SECONDS
        self._lock = asyncio.Lock()

    async def claims(
        self, headers: Mapping[str, str], http: aiohttp.ClientSession
    ) -> dict[str, Any] | None:
        """The verified claims of the request's assertion; None when it is absent or fails."""
        token = headers.get(self.header)
        if not token:
            return None
        try:
            kid = jwt.get_unverified_header(token).get("kid")
            key = await self._key(str(kid), http)
            if key is None:
                return None
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=[ALGORITHM],
                audience=self.audience,
                issuer=self.issuer,
                options={"require": list(REQUIRED_CLAIMS)},
            )
        except jwt.PyJWTError as exc:
            log.warning("demo_assertion_refused", error=type(exc).__name__)
            return None
        return claims

    async def _key(self, kid: str, http: aiohttp.ClientSession) -> jwt.PyJWK | None:
        async with self._lock:
            age = time.monotonic() - self._fetched_at
            known = self._keys is not None and any(k.key_id == kid for k in self._keys.keys)
            if age > JWKS_MAX_AGE or (not known and age > REFETCH_SECONDS):
                await self._fetch(http)
        if self._keys is None:
            return None
        return next((k for k in self._keys.keys if k.key_id == kid), None)

    async def _fetch(self, http: aiohttp.ClientSession) -> None:
        self._fetched_at = time.monotonic()
        try:
            async with http.get(self.jwks_url) as response:
                response.raise_for_status()
                self._keys = jwt.PyJWKSet.from_dict(await response.json())
        except (aiohttp.ClientError, TimeoutError, ValueError, jwt.PyJWTError) as exc:
            # The keys fetched before stay in use: an app keeps working through a gateway restart.
            log.warning("demo_jwks_unavailable", error=repr(exc))
