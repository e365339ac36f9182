"""The signed identity: a compact JWS (ES256) the app can verify against the gateway's JWKS.

Headers can be forged by anything that reaches the app without passing the gateway; a signature
cannot. A token is signed once per session, audience and key and then reused while more than half
of its ttl is left, so the cached path costs a dict lookup, not an ECDSA signature.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import jwt
import orjson
from multidict import CIMultiDictProxy

from gateway.config import AssertionConfig, GatewayConfig
from gateway.errors import AuthUnavailable
from gateway.keys import ALGORITHM
from gateway.policy import lookup

JWKS_PATH = "/.well-known/hamrah-gateway/jwks.json"
# Long enough that apps do not fetch it per request, short enough that a new key listed before
# it signs (see the README's rotation steps) reaches every app within minutes.
JWKS_CACHE_CONTROL = "public, max-age=300"
JWKS_CONTENT_TYPE = "application/json"
JTI_BYTES = 16
_UNSAFE_CHARS = frozenset("\r\n\x00")


def jwks_body(config: AssertionConfig | None) -> bytes | None:
    """{"keys": [...]}: the public half of every configured key, the signing one first."""
    if config is None:
        return None
    return orjson.dumps({"keys": [key.jwk for key in config.keys]})


def _unsafe(value: Any) -> bool:
    """Whether a claim value holds CR, LF or NUL in any string, at any depth."""
    if isinstance(value, str):
        return not _UNSAFE_CHARS.isdisjoint(value)
    if isinstance(value, list):
        return any(_unsafe(item) for item in value)
    if isinstance(value, dict):
        return any(_unsafe(k) or _unsafe(v) for k, v in value.items())
    return False


def _subject(value: Any) -> str | None:
    """sub is a string (RFC 7519 StringOrURI): a number or boolean becomes its string form."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return str(value)
    return None


@dataclass(frozen=True, slots=True)
class _Issued:
    """A signed header value, and the validation answer it was signed from."""

    claims: Mapping[str, Any]
    header: tuple[str, str]
    reuse_until: float


class Asserter:
    """Signs the identity of one validated session for the app, and serves the keys to check it.

    Built per config (a reload builds a new one), so a new first key signs from the next request.
    """

    def __init__(self, config: AssertionConfig, max_entries: int, scheme: str = "http") -> None:
        self._config = config
        self._scheme = scheme
        self._key = config.keys[0]
        self._signing_headers = {"kid": self._key.kid, "typ": "JWT"}
        self._max_entries = max_entries
        # (validation answer, audience) -> the token in use; bounded like the validation cache.
        self._issued: dict[tuple[int, str], _Issued] = {}
        self._jwks = jwks_body(config) or b""

    @classmethod
    def build(cls, config: GatewayConfig) -> Asserter | None:
        """The asserter a config asks for; None when `assertion` is absent (nothing changes)."""
        if config.assertion is None:
            return None
        scheme = "http" if config.tls is None else "https"
        return cls(config.assertion, config.auth.cache_max_entries, scheme)

    def audience(self, headers: CIMultiDictProxy[str], trusted: bool) -> str:
        """The configured audience, else the origin the request came to, as the app is told it:
        X-Forwarded-Proto and -Host from a trusted proxy, else the listener's scheme and Host."""
        configured = self._config.audience
        if configured is not None:
            return configured
        scheme, host = self._scheme, headers.get("Host", "")
        if trusted:
            proto = headers.get("X-Forwarded-Proto", "").partition(",")[0].strip().lower()
            scheme = proto if proto in ("http", "https") else scheme
            host = headers.get("X-Forwarded-Host", host).partition(",")[0].strip()
        return f"{scheme}://{host}"

    def header(
        self, claims: Mapping[str, Any], session_digest: Callable[[], str], audience: str
    ) -> tuple[str, str]:
        """The assertion header for a validated session; AuthUnavailable (503) when a claim
        cannot be carried safely. session_digest is called only when a token is signed."""
        # Keyed by the validation answer itself (one session's, as the auth cache holds it): the
        # entry keeps it alive, so its id cannot be reused meanwhile, and a session validated
        # again gets a token with what the auth API says now. The cached path hashes nothing.
        slot = (id(claims), audience)
        issued = self._issued.get(slot)
        if issued is not None and issued.claims is claims and issued.reuse_until > time.time():
            return issued.header
        # Whole seconds, as RFC 7519 NumericDates usually are; reuse ends at iat + ttl/2, so a
        # token always reaches the app with at least half its life left.
        iat = int(time.time())
        token = jwt.encode(
            self._claims(claims, session_digest(), audience, iat),
            self._key.private,
            algorithm=ALGORITHM,
            headers=self._signing_headers,
        )
        header = (self._config.header, token)
        if issued is None and len(self._issued) >= self._max_entries:
            # Oldest first: dicts keep insertion order.
            del self._issued[next(iter(self._issued))]
        self._issued[slot] = _Issued(claims, header, iat + self._config.ttl / 2)
        return header

    def _claims(
        self, claims: Mapping[str, Any], session_digest: str, audience: str, iat: int
    ) -> dict[str, Any]:
        config = self._config
        payload: dict[str, Any] = {}
        for claim, dotted in config.claims.items():
            _, value = lookup(claims, dotted)
            if value is None:
                # Missing or null is left out, never sent as null (verifiers choke on it).
                continue
            if _unsafe(value):
                raise AuthUnavailable(f"the auth API sent an unsafe value for claim {claim}")
            payload[claim] = value
        subject = _subject(payload.get("sub"))
        if subject is None:
            raise AuthUnavailable("the auth API sent no usable value for the assertion's sub")
        payload["sub"] = subject
        payload |= {
            "iss": config.issuer,
            "aud": audience,
            "iat": iat,
            "exp": iat + config.ttl,
            "jti": secrets.token_urlsafe(JTI_BYTES),
            "sid": session_digest,
        }
        return payload

    def jwks_answer(self, method: str, request_id: str) -> tuple[int, dict[str, str], bytes]:
        """Status, headers and body of the gateway's own answer on JWKS_PATH."""
        if method not in ("GET", "HEAD"):
            return 405, {"Allow": "GET, HEAD", "X-Request-ID": request_id}, b""
        headers = {
            "Content-Type": JWKS_CONTENT_TYPE,
            "Cache-Control": JWKS_CACHE_CONTROL,
            "X-Request-ID": request_id,
        }
        return 200, headers, self._jwks
