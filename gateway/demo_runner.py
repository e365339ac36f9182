"""Running the demo: the gateway with the demo frontend and auth API, in one process or apart."""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

import structlog
from aiohttp import web

from gateway.assertion import JWKS_PATH
from gateway.config import GatewayConfig, HostPort, parse_config
from gateway.demo import build_auth_api, build_frontend
from gateway.demo_verify import AssertionCheck
from gateway.keys import write_new_key
from gateway.logs import configure_logging
from gateway.service import Service, run_loop, stop_on_signals

log = structlog.get_logger("gateway.demo")

DEMO_PROTECT = ("/dashboard", "/settings", "/profile")
# A fixed audience rather than the default origin: the demo is opened as localhost and as
# 127.0.0.1 alike, and the frontend must know in advance what to expect.
DEMO_AUDIENCE = "hamrah-demo"
DEMO_KEY_NAME = "assertion.pem"
_ANY_ADDRESS = ("0.0.0.0", "::", "")


async def serve_app(
    app: web.Application, host: str = "127.0.0.1", port: int = 0, shutdown_timeout: float = 60.0
) -> tuple[web.AppRunner, int]:
    """Serve an aiohttp app (port 0: a free one); the runner to stop it, and the bound port."""
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=shutdown_timeout)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound = next(a[1] for a in runner.addresses if isinstance(a, tuple))
    return runner, int(bound)


def new_demo_key(directory: Path) -> Path:
    """A fresh signing key for one demo run (nothing to set up, nothing kept)."""
    path = directory / DEMO_KEY_NAME
    write_new_key(path)
    return path


def demo_check(host: str, port: int) -> AssertionCheck:
    """The frontend's check of the gateway listening on host:port; it fetches the JWKS there."""
    local = "127.0.0.1" if host in _ANY_ADDRESS else host
    return AssertionCheck(f"http://{HostPort(local, port)}{JWKS_PATH}", DEMO_AUDIENCE)


def demo_config(
    host: str, port: int, frontend_port: int, api_port: int, key: Path
) -> GatewayConfig:
    """The gateway config the demo runs with, written as a user would write it."""
    protect = ", ".join(DEMO_PROTECT)
    return parse_config(
        f"""
listen: {host}:{port}
upstream: http://127.0.0.1:{frontend_port}
auth:
  validate_url: http://127.0.0.1:{api_port}/api/auth/sessions/validate
protect: [{protect}]
admin_listen: null
log:
  format: console
assertion:
  keys: [{key}]
  audience: {DEMO_AUDIENCE}
  claims: {{sub: id, email: email, name: name, roles: roles}}
""",
        "<demo>",
    )


async def _demo(host: str, port: int) -> int:
    api_runner, api_port = await serve_app(build_auth_api(), "127.0.0.1", 0)
    frontend = build_frontend(f"http://127.0.0.1:{api_port}", demo_check(host, port))
    frontend_runner, frontend_port = await serve_app(frontend, "127.0.0.1", 0)
    with tempfile.TemporaryDirectory(prefix="hamrah-demo-") as keys:
        config = demo_config(host, port, frontend_port, api_port, new_demo_key(Path(keys)))
    print(f"hamrah-gateway demo: open http://{host}:{port}/ (Ctrl-C to stop)", flush=True)
    try:
        return await Service(None, config).run()
    finally:
        await frontend_runner.cleanup()
        await api_runner.cleanup()


def run_demo(host: str, port: int) -> int:
    """The whole flow on localhost: gateway, demo frontend, demo auth API."""
    configure_logging("info", "console")
    return run_loop(_demo(host, port))


async def _single(app: web.Application, listen: str) -> int:
    host, _, port = listen.rpartition(":")
    runner, bound = await serve_app(app, host, int(port))
    log.info("demo service started", listen=f"{host}:{bound}")
    stop = asyncio.Event()
    stop_on_signals(stop)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()
    return 0


def run_demo_service(command: str, listen: str, api_url: str) -> int:
    """One demo service on its own, as docker-compose runs them."""
    configure_logging("info", "json")
    app = build_auth_api() if command == "demo-api" else build_frontend(api_url)
    return run_loop(_single(app, listen))
