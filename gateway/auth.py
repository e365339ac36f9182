"""The auth client: asks the auth API whether a session is valid, and remembers the answer.

Fail closed: only a 2xx carrying a JSON object is a yes; 401/403 is a no; anything else (other
statuses, timeouts, refused connections, bad JSON, unsafe identity values) is an error, never a yes.
The one exception is the operator's (`stale_if_error`): a session the API called valid may be
served for that long past its expiry while the API errs; never after a 401/403, never to a cookie
it has not called valid.
"""

from __future__ import annotations

import asyncio
import enum
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import aiohttp
import orjson
import structlog

from gateway.admin import NOT_READY
from gateway.cache import CookieHasher, SingleFlight, TTLCache
from gateway.config import AuthConfig
from gateway.errors import AuthUnavailable, GatewayError
from gateway.metrics import Metrics
from gateway.policy import lookup
from gateway.shield import SlidingWindowLimiter, retry_after

if TYPE_CHECKING:
    # Imported where it is used: redis costs 7 MiB of memory a gateway without it need not pay.
    from gateway.shared_cache import SharedCache

MAX_VALIDATE_BODY_BYTES = 64 * 1024
# A call the gateway stopped waiting for (after auth.timeout) is still work at the auth API: it
# keeps its max_inflight slot until the API answers, or until this long has passed.
ABANDONED_CALL_SECONDS = 30.0
_UNSAFE_VALUE_CHARS = frozenset("\r\n\x00")
# A refresh ahead that erred is tried again no sooner than this: an erring auth API is not asked
# once per request for each signed-in user.
REFRESH_RETRY_SECONDS = 1.0
# /readyz names the auth API as failing for this long after the last stale answer, unless a call
# is answered first.
STALE_NOTICE_SECONDS = 10.0

log = structlog.get_logger("gateway.auth")


class Outcome(enum.StrEnum):
    """How a request's authentication was decided, as logged and counted."""

    PUBLIC = "public"
    CACHED = "cached"
    VALIDATED = "validated"
    DENIED = "denied"
    ERROR = "error"
    FORBIDDEN = "forbidden"
    ANONYMOUS = "anonymous"
    DEGRADED = "degraded"
    LIMITED = "limited"
    SHED = "shed"
    STALE = "stale"


@dataclass(frozen=True, slots=True)
class Identity:
    """A validated session: the headers it sends upstream and the claims it was built from."""

    headers: tuple[tuple[str, str], ...]
    claims: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Verdict:
    """The answer for one request: an identity, or None when the session is not valid.

    set_cookies are the auth API's own Set-Cookie headers (a renewed or cleared session): they go
    to the browser with this answer only, and are never replayed from the cache.
    """

    outcome: Outcome
    identity: Identity | None
    set_cookies: tuple[str, ...] = ()


@dataclass(slots=True)
class _Cached:
    """A cached session: its verdict, built once, and when a request should start a refresh."""

    verdict: Verdict
    refresh_at: float


class RateLimited(GatewayError):
    """Too many unknown sessions from one client: the auth API is shielded from the flood."""

    status = 429
    outcome = Outcome.LIMITED


def identity_from_claims(claims: Mapping[str, Any], fields: Mapping[str, str]) -> Identity:
    """Build identity headers: scalars as their string form; missing, null, objects, lists: none."""
    headers = []
    for header, dotted in fields.items():
        _, value = lookup(claims, dotted)
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, (str, int, float)):
            text = str(value)
        else:
            continue
        if not _UNSAFE_VALUE_CHARS.isdisjoint(text):
            raise AuthUnavailable(f"the auth API sent an unsafe value for {header}")
        headers.append((header, text))
    return Identity(tuple(headers), claims)


class AuthClient:
    """Validates session cookies against the auth API, and shields it.

    In front of every call, in order: the local cache (a signed-in user never waits on the
    shield), the negative cache, single flight (one lookup per cookie at a time), the shared cache
    of all replicas, the per-client limit on unknown sessions, and the cap on calls in flight.

    A cached session older than refresh_ahead x cache_ttl is still answered from the cache, and
    that request starts one revalidation in the background (in the same single flight). Entries
    are kept stale_if_error past their expiry, for the answer when a needed validation errs.
    """

    def __init__(
        self,
        config: AuthConfig,
        session: aiohttp.ClientSession,
        metrics: Metrics,
        shared: SharedCache | None = None,
    ) -> None:
        self._config = config
        self._session = session
        self._metrics = metrics
        self._shared = shared
        self.digest = CookieHasher.from_secret(config.cache.secret)
        # With a shared cache the local copy is a short first level, so a revocation that
        # missed this process still takes effect within local_ttl.
        self._local_ttl = (
            min(config.cache_ttl, config.cache.local_ttl) if shared else config.cache_ttl
        )
        self._refresh_after = config.refresh_ahead * config.cache_ttl
        # With cache_ttl 0 every request is validated, but a valid answer is still kept for the
        # stale answer when stale_if_error asks for it.
        self._keeps = config.cache_ttl > 0 or config.stale_if_error > 0
        self._cache: TTLCache[str, _Cached] = TTLCache(config.cache_max_entries)
        self._denied: TTLCache[str, bool] = TTLCache(config.cache_max_entries)
        self._flight: SingleFlight[str, Verdict] = SingleFlight()
        self._inflight = asyncio.Semaphore(config.max_inflight)
        rate = config.unknown_session_rate
        self._limiter = None if rate is None else SlidingWindowLimiter(rate)
        self._call_limit = aiohttp.ClientTimeout(total=ABANDONED_CALL_SECONDS)
        # Why the auth API last erred while a stale session was served, and when.
        self._failing: str | None = None
        self._failing_at = 0.0

    @property
    def config(self) -> AuthConfig:
        return self._config

    def checks(self) -> dict[str, str]:
        """For /readyz: the auth API, named as failing while sessions are being served stale."""
        if self._failing is None or time.monotonic() - self._failing_at > STALE_NOTICE_SECONDS:
            return {}
        return {"auth_api": f"{NOT_READY}: {self._failing}; serving stale sessions"}

    def evict(self, digest: str) -> bool:
        """Drop this process's cached validation for a session digest (revocation), stale copy
        included."""
        found = self._cache.discard(digest)
        self._denied.discard(digest)
        self._metrics.cache_entries.set(len(self._cache))
        return found

    def evict_all(self) -> None:
        """Forget every cached validation (revocations may have been missed)."""
        self._cache.clear()
        self._metrics.cache_entries.set(0)

    def is_cached(self, cookie_value: str | None) -> bool:
        """Whether this cookie is a session validated and still cached here: what an
        overloaded gateway keeps serving."""
        return cookie_value is not None and self._cache.get(self.digest(cookie_value)) is not None

    async def verify(self, cookie_value: str, client_ip: str, request_id: str) -> Verdict:
        """Return the verdict for a session cookie value; raise AuthUnavailable on any doubt."""
        key = self.digest(cookie_value)
        if self._config.cache_ttl > 0:
            now = time.monotonic()
            cached = self._cache.get(key, now)
            self._metrics.cache_lookup(cached is not None)
            if cached is not None:
                if cached.refresh_at <= now:
                    self._refresh(key, cached, now, cookie_value, client_ip, request_id)
                return cached.verdict
        if self._config.negative_ttl > 0 and self._denied.get(key):
            return Verdict(Outcome.DENIED, None)
        try:
            return await self._flight.run(
                key, lambda: self._resolve(key, cookie_value, client_ip, request_id)
            )
        except AuthUnavailable as exc:
            return self._stale(key, exc)

    def _refresh(
        self,
        key: str,
        cached: _Cached,
        now: float,
        cookie_value: str,
        client_ip: str,
        request_id: str,
    ) -> None:
        """Start one revalidation of a session still answered from the cache, unless a call for
        this cookie is in flight already. Its answer replaces the entry; an error leaves it."""
        cached.refresh_at = now + REFRESH_RETRY_SECONDS
        if key not in self._flight:
            self._flight.start(
                key,
                lambda: self._resolve(key, cookie_value, client_ip, request_id, refresh=True),
            )

    def _stale(self, key: str, error: AuthUnavailable) -> Verdict:
        """After a validation erred: the identity the API last called valid while that answer is
        at most stale_if_error past its expiry; otherwise the error."""
        cached = self._cache.stale(key) if self._config.stale_if_error > 0 else None
        if cached is None:
            raise error
        if self._failing is None:
            log.warning("auth api failing; serving sessions stale", reason=error.reason)
        self._failing, self._failing_at = error.reason, time.monotonic()
        return Verdict(Outcome.STALE, cached.verdict.identity)

    async def _resolve(
        self, key: str, cookie_value: str, client_ip: str, request_id: str, refresh: bool = False
    ) -> Verdict:
        """One per cookie at a time: the shared cache, then the shield, then the auth API."""
        config = self._config
        shared_entry = None
        if self._shared is not None and self._keeps:
            shared_entry = await self._shared.get(key)
            if shared_entry is not None:
                # The key lives cache_ttl + stale_if_error: what is left beyond the stale
                # window is the session's remaining validity.
                life = min(shared_entry.ttl - config.stale_if_error, config.cache_ttl)
                renewed = life > 0 and config.cache_ttl - life < self._refresh_after
                if (not refresh and life > -config.stale_if_error) or (refresh and renewed):
                    identity = identity_from_claims(shared_entry.claims, config.identity_headers)
                    self._remember(key, identity, life)
                    # Past its expiry the copy stays only for the stale answer.
                    if life > 0:
                        return Verdict(Outcome.CACHED, identity)
        if self._limiter is not None and not refresh:
            wait = self._limiter.acquire(client_ip)
            if wait is not None:
                raise RateLimited(
                    "too many sign-in checks from this client",
                    headers=(("Retry-After", retry_after(wait)),),
                )
        verdict = await self._validate(cookie_value, client_ip, request_id)
        if verdict.identity is not None:
            if self._keeps:
                self._remember(key, verdict.identity, config.cache_ttl)
                if self._shared is not None:
                    ttl = config.cache_ttl + config.stale_if_error
                    await self._shared.put(key, verdict.identity.claims, ttl)
            return verdict
        # Refused: no copy may outlive that answer, here or (stale) in the shared cache.
        had = self._cache.discard(key)
        self._metrics.cache_entries.set(len(self._cache))
        if self._shared is not None and (had or shared_entry is not None):
            await self._shared.revoke(key)
        if config.negative_ttl > 0:
            self._denied.put(key, True, config.negative_ttl)
        return verdict

    def _remember(self, key: str, identity: Identity, life: float) -> None:
        """Cache a session that stays valid `life` more seconds: fresh here for at most local_ttl,
        kept for the stale answer until stale_if_error past its expiry."""
        age = self._config.cache_ttl - life
        refresh_at = (
            time.monotonic() + self._refresh_after - age if self._refresh_after > 0 else math.inf
        )
        fresh = min(life, self._local_ttl)
        keep = life + self._config.stale_if_error - fresh
        self._cache.put(key, _Cached(Verdict(Outcome.CACHED, identity), refresh_at), fresh, keep)
        self._metrics.cache_entries.set(len(self._cache))

    async def _validate(self, cookie_value: str, client_ip: str, request_id: str) -> Verdict:
        """One call to the auth API within auth.timeout, under the max_inflight cap.

        The slot is held until the API has answered, not until the gateway stops waiting: the
        cap is on work at the API, which goes on after a timeout here.
        """
        try:
            async with asyncio.timeout(self._config.timeout):
                await self._inflight.acquire()
        except TimeoutError:
            self._metrics.auth_calls.labels("shed").inc()
            raise AuthUnavailable("too many sign-in checks are in progress") from None
        started = time.perf_counter()
        call = asyncio.ensure_future(self._call(cookie_value, client_ip, request_id))
        call.add_done_callback(lambda done: self._finished(done, started))
        try:
            async with asyncio.timeout(self._config.timeout):
                return await asyncio.shield(call)
        except TimeoutError:
            log.warning("auth api unavailable", error="TimeoutError")
            raise AuthUnavailable("the auth API could not be reached") from None

    def _finished(self, call: asyncio.Future[Verdict], started: float) -> None:
        self._inflight.release()
        if call.cancelled() or call.exception() is not None:
            result = "error"
        else:
            result = "valid" if call.result().identity is not None else "denied"
            if self._failing is not None:
                log.info("auth api answering again")
                self._failing = None
        self._metrics.auth_calls.labels(result).inc()
        self._metrics.auth_latency.observe(time.perf_counter() - started)

    async def _call(self, cookie_value: str, client_ip: str, request_id: str) -> Verdict:
        headers = {
            "Cookie": f"{self._config.cookie}={cookie_value}",
            "User-Agent": self._config.user_agent,
            "X-Forwarded-For": client_ip,
            "X-Request-ID": request_id,
        }
        try:
            async with self._session.get(
                self._config.validate_url,
                headers=headers,
                allow_redirects=False,
                timeout=self._call_limit,
            ) as response:
                status = response.status
                set_cookies = tuple(response.headers.getall("Set-Cookie", ()))
                if status in (401, 403):
                    return Verdict(Outcome.DENIED, None, set_cookies)
                if not 200 <= status < 300:
                    raise AuthUnavailable(f"the auth API answered {status}")
                body = await _read_small(response.content)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            log.warning("auth api unavailable", error=type(exc).__name__)
            raise AuthUnavailable("the auth API could not be reached") from None
        try:
            claims = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise AuthUnavailable("the auth API sent a body that is not JSON") from None
        if not isinstance(claims, dict):
            raise AuthUnavailable("the auth API sent JSON that is not an object")
        identity = identity_from_claims(claims, self._config.identity_headers)
        return Verdict(Outcome.VALIDATED, identity, set_cookies)


async def _read_small(stream: aiohttp.StreamReader) -> bytes:
    chunks = []
    size = 0
    while chunk := await stream.readany():
        size += len(chunk)
        if size > MAX_VALIDATE_BODY_BYTES:
            raise AuthUnavailable("the auth API sent an oversized body")
        chunks.append(chunk)
    return b"".join(chunks)
