"""The admin listener: liveness, readiness with the failing check named, metrics, revocation."""

from __future__ import annotations

import asyncio
import hmac
import re
from typing import Protocol

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST
from yarl import URL

from gateway.assertion import JWKS_CACHE_CONTROL, JWKS_CONTENT_TYPE, jwks_body
from gateway.cache import CookieHasher
from gateway.config import GatewayConfig

READY_CHECK_TIMEOUT = 1.0
# A degraded_checks value starting with this fails readiness; "degraded: ..." does not.
NOT_READY = "not ready"
MAX_REVOKE_BODY_BYTES = 8192
_DIGEST = re.compile(r"^[0-9a-f]{64}$")


class RevokeRefused(Exception):
    """A revocation the admin API cannot carry out as asked; the text says why."""


def revocation_digest(hasher: CookieHasher, session: str | None, digest: str | None) -> str:
    """The digest a revocation names: the session's own, or the one given if digests are shared.

    Without auth.cache.secret each process keys its digests with its own random key, so a digest
    seen in one process's logs names nothing in another: revoking by digest is refused.
    """
    if digest is None:
        assert session is not None, "revoke_request gives exactly one of the two"
        return hasher(session)
    if not hasher.shared:
        raise RevokeRefused("revoking by digest needs auth.cache.secret (digests are keyed)")
    return digest


class AdminBackend(Protocol):
    """What the admin routes need from a running gateway (one process, or the supervisor)."""

    def current_config(self) -> GatewayConfig: ...

    async def degraded_checks(self) -> dict[str, str]: ...

    def exposition(self) -> bytes: ...

    async def revoke(self, session: str | None, digest: str | None) -> dict[str, object]: ...


async def _reachable(url: str) -> str | None:
    """None when a TCP connection to the URL's host and port opens in time, else why not."""
    target = URL(url)
    host, port = target.host or "", target.port or (443 if target.scheme == "https" else 80)
    try:
        async with asyncio.timeout(READY_CHECK_TIMEOUT):
            _, writer = await asyncio.open_connection(host, port)
    except TimeoutError:
        return "timed out"
    except OSError as exc:
        return exc.strerror or type(exc).__name__
    writer.close()
    return None


async def revoke_request(request: web.Request) -> tuple[str | None, str | None]:
    """The session value or digest named by a revocation request's JSON body."""
    if request.content_length is not None and request.content_length > MAX_REVOKE_BODY_BYTES:
        raise RevokeRefused("body too large")
    try:
        body = await request.json()
    except ValueError:
        raise RevokeRefused(
            'expected JSON: {"session": "<cookie value>"} or {"digest": "<hex>"}'
        ) from None
    session = body.get("session") if isinstance(body, dict) else None
    digest = body.get("digest") if isinstance(body, dict) else None
    if (session is None) == (digest is None):
        raise RevokeRefused('give exactly one of "session" or "digest"')
    if session is not None and (not isinstance(session, str) or not session):
        raise RevokeRefused('"session" must be a non-empty string')
    if digest is not None and (not isinstance(digest, str) or not _DIGEST.match(digest)):
        raise RevokeRefused('"digest" must be 64 lowercase hex characters (HMAC-SHA256)')
    return session, digest


def build_admin_app(backend: AdminBackend) -> web.Application:
    """Routes of the admin listener; the config in force is read per request (reload swaps it)."""

    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(request: web.Request) -> web.Response:
        config = backend.current_config()
        targets = {
            "upstream": config.upstream,
            **{f"route {route.prefix}": route.upstream for route in config.routes},
            "auth_api": config.auth.validate_url,
        }
        results = await asyncio.gather(*(_reachable(url) for url in targets.values()))
        checks = {"config": "ok"} | {
            name: "ok" if problem is None else f"unreachable: {problem}"
            for name, problem in zip(targets, results, strict=True)
        }
        # Degraded parts (a shared cache that is down) are reported but do not fail readiness:
        # the gateway still serves correctly without them. What the backend knows of a target
        # (an auth API that errs while it accepts connections) replaces the probe's word.
        degraded = await backend.degraded_checks()
        checks |= degraded
        failing = [
            name
            for name, value in checks.items()
            if value.startswith(NOT_READY) or (name not in degraded and value != "ok")
        ]
        status = (
            "not ready"
            if failing
            else ("degraded" if any(v != "ok" for v in degraded.values()) else "ready")
        )
        body: dict[str, object] = {"status": status, "checks": checks, "failing": failing}
        return web.json_response(body, status=503 if failing else 200)

    async def metrics_text(request: web.Request) -> web.Response:
        response = web.Response(body=backend.exposition())
        response.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return response

    async def revoke(request: web.Request) -> web.Response:
        token = backend.current_config().admin_token
        if token is None:
            return web.json_response(
                {"error": "revocation is disabled: set admin_token in the config"}, status=404
            )
        given = request.headers.get("Authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
            return web.json_response(
                {"error": "a valid bearer token is required"},
                status=401,
                headers={"WWW-Authenticate": 'Bearer realm="hamrah-gateway-admin"'},
            )
        try:
            session, digest = await revoke_request(request)
            result = await backend.revoke(session, digest)
        except RevokeRefused as exc:
            return web.json_response({"error": str(exc)}, status=400)
        return web.json_response({"revoked": True, **result})

    async def jwks(request: web.Request) -> web.Response:
        body = jwks_body(backend.current_config().assertion)
        if body is None:
            return web.json_response({"error": "assertion is not configured"}, status=404)
        return web.Response(
            body=body,
            content_type=JWKS_CONTENT_TYPE,
            headers={"Cache-Control": JWKS_CACHE_CONTROL},
        )

    app = web.Application(client_max_size=MAX_REVOKE_BODY_BYTES)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/jwks.json", jwks)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_text)
    app.router.add_post("/sessions/revoke", revoke)
    return app


class WorkerBackend(Protocol):
    """A worker, as its supervisor asks it: drop a session from its own cache; what it knows of
    its health that a probe from outside cannot see."""

    def evict_here(self, session: str | None, digest: str | None) -> dict[str, object]: ...

    async def degraded_checks(self) -> dict[str, str]: ...


def build_control_app(worker: WorkerBackend) -> web.Application:
    """A worker's private control channel (a unix socket only its supervisor can reach). It
    evicts locally only: the supervisor makes the one shared (Redis) revocation itself."""

    async def checks(request: web.Request) -> web.Response:
        return web.json_response(await worker.degraded_checks())

    async def revoke(request: web.Request) -> web.Response:
        try:
            session, digest = await revoke_request(request)
            result = worker.evict_here(session, digest)
        except RevokeRefused as exc:
            return web.json_response({"error": str(exc)}, status=400)
        return web.json_response(result)

    app = web.Application(client_max_size=MAX_REVOKE_BODY_BYTES)
    app.router.add_post("/revoke", revoke)
    app.router.add_get("/checks", checks)
    return app
