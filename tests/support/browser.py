"""Helpers for the browser tests: the demo stack on loopback ports and a headless Chromium.

Everything runs in the test's own event loop: the demo auth API and demo frontend on aiohttp
AppRunners, the gateway via start_gateway, and Playwright's async driver talking to the Debian
Chromium binary (no Playwright browser download is needed or used).
"""

from __future__ import annotations

import re
import socket
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from aiohttp import web
from playwright.async_api import Browser, Page, async_playwright

from gateway.config import GatewayConfig
from gateway.demo import DEMO_COOKIE, build_auth_api, build_frontend
from gateway.demo_runner import demo_check, demo_config, new_demo_key, serve_app
from gateway.server import RunningGateway, start_gateway
from gateway.tls_config import TlsConfig

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
# Playwright's default switch that disables Chrome's back/forward cache.
BFCACHE_OFF = "--disable-back-forward-cache"
ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts"
# How long any single browser wait may take; each whole test finishes in a few seconds.
WAIT_MS = 10_000
# The demo apps get a short grace on shutdown so a test that stops one mid-run is not held up.
SHUTDOWN_GRACE = 2.0


async def serve(app: web.Application) -> tuple[web.AppRunner, int]:
    """Serve app on 127.0.0.1 at a free port; return the runner and the port."""
    return await serve_app(app, shutdown_timeout=SHUTDOWN_GRACE)


@dataclass
class DemoStack:
    """The gateway in front of the demo frontend, which signs in against the demo auth API."""

    gateway: RunningGateway
    config: GatewayConfig
    api_runner: web.AppRunner
    api_port: int
    frontend_runner: web.AppRunner
    frontend_port: int
    stopped: set[str] = field(default_factory=set)
    scheme: str = "http"

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.gateway.port}"

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    async def stop_frontend(self) -> None:
        if "frontend" not in self.stopped:
            self.stopped.add("frontend")
            await self.frontend_runner.cleanup()

    async def stop_api(self) -> None:
        if "api" not in self.stopped:
            self.stopped.add("api")
            await self.api_runner.cleanup()

    async def close(self) -> None:
        await self.gateway.close()
        await self.stop_frontend()
        await self.stop_api()


@asynccontextmanager
async def demo_stack(
    *, cache_ttl: float | None = None, tls: TlsConfig | None = None
) -> AsyncIterator[DemoStack]:
    """The whole demo, built as the demo command builds it (demo_config, a new signing key, the
    frontend checking the gateway's signature), the gateway on a free port bound beforehand
    (over https with `tls`)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    api_runner, api_port = await serve(build_auth_api())
    # Over https the frontend would need the test CA to fetch the JWKS: the TLS demo trusts
    # the identity headers (its signature check is tested over plain http).
    check = demo_check("127.0.0.1", port) if tls is None else None
    frontend = build_frontend(f"http://127.0.0.1:{api_port}", check)
    frontend_runner, frontend_port = await serve(frontend)
    with tempfile.TemporaryDirectory(prefix="hamrah-demo-") as keys:
        config = demo_config("127.0.0.1", port, frontend_port, api_port, new_demo_key(Path(keys)))
    if cache_ttl is not None:
        config = config.model_copy(
            update={"auth": config.auth.model_copy(update={"cache_ttl": cache_ttl})}
        )
    if tls is not None:
        config = config.model_copy(update={"tls": tls, "assertion": None})
    gateway = await start_gateway(config, listener)
    stack = DemoStack(gateway, config, api_runner, api_port, frontend_runner, frontend_port)
    stack.scheme = "http" if tls is None else "https"
    try:
        yield stack
    finally:
        await stack.close()


@asynccontextmanager
async def chromium(*, bfcache: bool = False, args: tuple[str, ...] = ()) -> AsyncIterator[Browser]:
    """A headless Debian Chromium; each launch gets a fresh temporary profile from Playwright.

    Playwright turns Chrome's back/forward cache off by default; bfcache=True turns it back on,
    as it is in a real Chrome, for tests of what the Back button shows.
    """
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=[*CHROMIUM_ARGS, *args],
            headless=True,
            ignore_default_args=[BFCACHE_OFF] if bfcache else None,
        )
        try:
            yield browser
        finally:
            await browser.close()


async def shot(page: Page, name: str) -> Path:
    """Save a full-page screenshot as tests/artifacts/<name>.png."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    await page.screenshot(path=str(path), full_page=True)
    return path


async def sign_in(page: Page, email: str, name: str) -> None:
    """Fill and submit the demo login form the page is showing (not the header's link)."""
    form = page.locator("form[action='/login']")
    await form.locator("#email").fill(email)
    await form.locator("#name").fill(name)
    await form.locator("button[type=submit]").click()


def path_and_next(url: str) -> tuple[str, list[str]]:
    """A URL's path and its decoded `next` query values."""
    parts = urlsplit(url)
    return parts.path, parse_qs(parts.query).get("next", [])


def url_path_is(path: str) -> re.Pattern[str]:
    """A pattern for expect(page).to_have_url matching any URL whose path is exactly path."""
    return re.compile(rf"^https?://[^/]+{re.escape(path)}(?:\?[^#]*)?(?:#.*)?$")


async def session_cookie(page: Page) -> str | None:
    """The demo session cookie's value in the page's browser context, HttpOnly or not."""
    for cookie in await page.context.cookies():
        if cookie.get("name") == DEMO_COOKIE:
            return cookie.get("value")
    return None
