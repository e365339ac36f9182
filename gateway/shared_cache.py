"""The optional second-level validation cache, shared by the gateway replicas through Redis.

A validation one replica made is reused by the others: the claims are stored as JSON under
`key_prefix + digest`, where the digest is the HMAC of the cookie value under auth.cache.secret
(`cache.CookieHasher`), so the raw cookie value never leaves the process. A revocation deletes
the key and is published on a pub/sub channel; every replica (the publisher included) hears it
and evicts its own in-process entry through `on_revoke(digest)`.

Redis is an optimisation, never a dependency: every operation has a short deadline
(`op_timeout`), no operation raises, and while Redis is unreachable `get` and `put` return at
once without touching the network. A background task owns the subscription and the health: it
notices a dead connection (the subscription breaks, or stops answering its PINGs), retries every
`retry_interval`, and flips the cache back to healthy, subscription restored, when Redis answers
again. Each change of state is logged once.

Messages published while a replica was disconnected are lost (pub/sub does not queue them);
`on_resubscribe`, called when a lost subscription is restored, lets the owner drop what it
cached meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import orjson
import structlog
from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError

from gateway.config import check_redis_url

log = structlog.get_logger("gateway.shared_cache")

_DIGEST = re.compile(r"[0-9a-f]{64}")
_REASON_MAX = 120


@dataclass(frozen=True, slots=True)
class SharedEntry:
    """Cached claims and the seconds their key has left (its PTTL: Redis's clock, not ours, so
    replicas whose clocks differ agree on it)."""

    claims: dict[str, Any]
    ttl: float


class _State(enum.Enum):
    UNKNOWN = "unknown"
    UP = "up"
    DOWN = "down"


def _location(url: str) -> str:
    """Where the Redis server is, for logs: the URL without its credentials."""
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        port = None
    host = parts.hostname or ""
    where = f"{host}:{port}" if port is not None else host
    return f"{parts.scheme}://{where}{parts.path}"


def _reason(exc: BaseException, op_timeout: float) -> str:
    """A short, single-line reason for /readyz and the logs."""
    if isinstance(exc, TimeoutError) and not str(exc):
        text = f"no answer within {op_timeout:g}s"
    else:
        text = str(exc).splitlines()[0] if str(exc) else ""
    name = type(exc).__name__
    reason = f"{name}: {text}" if text else name
    return reason if len(reason) <= _REASON_MAX else reason[: _REASON_MAX - 3] + "..."


class SharedCache:
    """Claims cached in Redis for every replica, and revocations broadcast over pub/sub."""

    def __init__(
        self,
        url: str,
        *,
        on_revoke: Callable[[str], None],
        key_prefix: str = "hamrah-gateway:session:",
        channel: str = "hamrah-gateway:revoked",
        op_timeout: float = 0.25,
        retry_interval: float = 1.0,
        on_resubscribe: Callable[[], None] | None = None,
    ) -> None:
        check_redis_url(url)
        if op_timeout <= 0 or retry_interval <= 0:
            raise ValueError("op_timeout and retry_interval must be positive")
        self._url = url
        self._where = _location(url)
        self._on_revoke = on_revoke
        self._on_resubscribe = on_resubscribe
        self._prefix = key_prefix
        self._channel = channel
        self._op_timeout = op_timeout
        self._retry_interval = retry_interval
        self._client: Redis | None = None
        self._task: asyncio.Task[None] | None = None
        self._first_attempt = asyncio.Event()
        self._state = _State.UNKNOWN
        self._reason_text = "not started"

    # -- health ---------------------------------------------------------------------------------

    @property
    def healthy(self) -> bool:
        """False while Redis is unreachable (and before start, after close)."""
        return self._state is _State.UP and self._client is not None

    @property
    def status(self) -> str:
        """`ok`, or `degraded: <short reason>`, for /readyz."""
        return "ok" if self.healthy else f"degraded: {self._reason_text}"

    def _mark_up(self) -> None:
        if self._state is not _State.UP:
            if self._state is _State.DOWN:
                log.info("shared cache available again", redis=self._where)
            else:
                log.info("shared cache connected", redis=self._where)
            self._state = _State.UP
            self._reason_text = ""

    def _mark_down(self, exc: BaseException) -> None:
        self._reason_text = _reason(exc, self._op_timeout)
        if self._state is not _State.DOWN and self._client is not None:
            log.warning(
                "shared cache unavailable",
                redis=self._where,
                reason=self._reason_text,
                retry_interval=self._retry_interval,
            )
        self._state = _State.DOWN

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        """Connect and subscribe; when Redis is down, start degraded and keep retrying."""
        if self._client is not None:
            return
        self._client = Redis.from_url(
            self._url,
            socket_timeout=self._op_timeout,
            socket_connect_timeout=self._op_timeout,
            # No retries inside redis-py (its default retries 10 times with backoff): one
            # attempt per operation, and the background task does the reconnecting.
            retry=Retry(NoBackoff(), 0),
        )
        self._reason_text = "connecting"
        self._first_attempt.clear()
        self._task = asyncio.create_task(self._run(self._client), name="shared-cache")
        # Wait for the first attempt (each of its steps has op_timeout), so a replica that
        # starts with Redis up is healthy at once; a Redis that does not answer costs no more.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(3 * self._op_timeout + 0.5):
                await self._first_attempt.wait()

    async def close(self) -> None:
        """Stop the background task and close the connections; safe to call more than once."""
        task, self._task = self._task, None
        client, self._client = self._client, None
        if task is not None:
            task.cancel()
            await asyncio.wait([task])
        if client is not None:
            with contextlib.suppress(Exception):
                await client.aclose()
        self._state = _State.UNKNOWN
        self._reason_text = "closed"

    # -- the cache ------------------------------------------------------------------------------

    def _key(self, digest: str) -> str:
        return self._prefix + digest

    async def get(self, digest: str) -> SharedEntry | None:
        """The claims cached for a session digest and their time left, or None (absent, or Redis
        unavailable)."""
        client = self._client
        if client is None or self._state is not _State.UP:
            return None
        key = self._key(digest)
        try:
            async with asyncio.timeout(self._op_timeout):
                async with client.pipeline(transaction=False) as pipe:
                    pipe.get(key)
                    pipe.pttl(key)
                    raw, pttl = await pipe.execute()
        except Exception as exc:
            self._mark_down(exc)
            return None
        # PTTL -2: the key expired between the two commands; -1: stored without a ttl.
        if raw is None or pttl == -2:
            return None
        try:
            claims = orjson.loads(raw)
        except orjson.JSONDecodeError:
            log.warning("shared cache entry is not JSON; ignored")
            return None
        if not isinstance(claims, dict):
            log.warning("shared cache entry is not a JSON object; ignored")
            return None
        return SharedEntry(claims, math.inf if pttl < 0 else pttl / 1000)

    async def put(self, digest: str, claims: Mapping[str, Any], ttl: float) -> None:
        """Cache claims for `ttl` seconds (SET key json PX ttl_ms); skipped if Redis is down."""
        client = self._client
        if client is None or self._state is not _State.UP or ttl <= 0:
            return
        try:
            value = orjson.dumps(dict(claims))
        except TypeError as exc:
            log.warning("shared cache could not encode the claims", error=str(exc))
            return
        ttl_ms = max(1, round(ttl * 1000))
        try:
            async with asyncio.timeout(self._op_timeout):
                await client.set(self._key(digest), value, px=ttl_ms)
        except Exception as exc:
            self._mark_down(exc)

    async def revoke(self, digest: str) -> bool:
        """Delete the entry and tell every replica; False when Redis did not take it.

        Tried even while the cache is degraded (a revocation is rare and worth one attempt);
        the caller evicts its own entry whatever the answer.
        """
        client = self._client
        if client is None:
            return False
        try:
            async with asyncio.timeout(self._op_timeout):
                async with client.pipeline(transaction=True) as pipe:
                    pipe.delete(self._key(digest))
                    pipe.publish(self._channel, digest)
                    await pipe.execute()
        except Exception as exc:
            self._mark_down(exc)
            return False
        return True

    # -- the background task: subscription, liveness, reconnection ---------------------------------

    async def _run(self, client: Redis) -> None:
        subscribed_before = False
        while True:
            pubsub = client.pubsub()
            try:
                await self._subscribe(client, pubsub)
                self._mark_up()
                self._first_attempt.set()
                if subscribed_before and self._on_resubscribe is not None:
                    self._call(self._on_resubscribe)
                subscribed_before = True
                await self._listen(client, pubsub)
            except Exception as exc:
                self._mark_down(exc)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()
            self._first_attempt.set()
            await asyncio.sleep(self._retry_interval)

    async def _subscribe(self, client: Redis, pubsub: PubSub) -> None:
        """Subscribe and wait for the confirmation, then check that commands work too."""
        async with asyncio.timeout(self._op_timeout):
            await pubsub.subscribe(self._channel)
            while True:
                message = await pubsub.get_message(timeout=self._op_timeout)
                if message is not None and message["type"] == "subscribe":
                    break
        async with asyncio.timeout(self._op_timeout):
            await client.ping()

    async def _listen(self, client: Redis, pubsub: PubSub) -> None:
        """Deliver revocations until the connection fails (then raise).

        Every retry_interval the subscription is PINGed (a PONG must arrive before the next
        check, or the connection is taken as dead: a silent network drop does not close it),
        and while a request-path failure has marked the cache down, a PING on the command path
        flips it back up.
        """
        loop = asyncio.get_running_loop()
        pong_pending = False
        next_check = loop.time() + self._retry_interval
        while True:
            wait = max(0.0, next_check - loop.time())
            message = await pubsub.get_message(timeout=wait)
            if message is not None:
                if message["type"] == "pong":
                    pong_pending = False
                elif message["type"] == "message":
                    self._deliver(message["data"])
            if loop.time() < next_check:
                continue
            if pong_pending:
                raise RedisConnectionError("the subscription stopped answering PING")
            async with asyncio.timeout(self._op_timeout):
                await pubsub.ping()
            pong_pending = True
            if self._state is not _State.UP:
                async with asyncio.timeout(self._op_timeout):
                    await client.ping()
                self._mark_up()
            next_check = loop.time() + self._retry_interval

    def _deliver(self, data: object) -> None:
        digest = data.decode("ascii", "replace") if isinstance(data, bytes) else data
        if not isinstance(digest, str) or not _DIGEST.fullmatch(digest):
            log.warning("shared cache ignored a malformed revocation message")
            return
        self._call(self._on_revoke, digest)

    def _call(self, callback: Callable[..., None], *args: str) -> None:
        try:
            callback(*args)
        except Exception:
            log.exception("shared cache callback failed")
