"""The demo through the gateway in headless Chromium: sign-in, live streams, fetch, error pages.

Each test gets the gateway, the demo frontend and the demo auth API on free loopback ports in
this process, and its own Chromium with a fresh temporary profile. Screenshots of every step go
to tests/artifacts/ (git-ignored).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from playwright.async_api import Page, Response, expect

from gateway.demo import DEMO_COOKIE
from tests.support.browser import (
    WAIT_MS,
    DemoStack,
    chromium,
    demo_stack,
    path_and_next,
    session_cookie,
    shot,
    sign_in,
    url_path_is,
)

EMAIL = "ada@example.com"
NAME = "Ada Lovelace"

expect.set_options(timeout=WAIT_MS)


@pytest.fixture
async def stack(request: pytest.FixtureRequest) -> AsyncIterator[DemoStack]:
    """The demo stack; parametrize indirectly with a number to set the gateway's auth cache_ttl."""
    cache_ttl: float | None = getattr(request, "param", None)
    async with demo_stack(cache_ttl=cache_ttl) as running:
        yield running


@pytest.fixture
async def page(stack: DemoStack) -> AsyncIterator[Page]:
    """A page in a fresh Chromium whose relative URLs resolve against the gateway.

    It depends on stack so the browser, and every connection it holds, is gone before the
    servers shut down.
    """
    async with chromium() as browser:
        context = await browser.new_context(
            base_url=stack.url, viewport={"width": 1024, "height": 720}
        )
        context.set_default_timeout(WAIT_MS)
        try:
            yield await context.new_page()
        finally:
            await context.close()


def _ok(response: Response | None) -> Response:
    assert response is not None, "the navigation produced no response"
    return response


# ---------------------------------------------------------------------------------------------
# 1. Sign-in round trip, reload, logout and the back button
# ---------------------------------------------------------------------------------------------


async def test_sign_in_returns_to_target_and_logout_survives_back_button(
    stack: DemoStack, page: Page
) -> None:
    """Sign-in returns to the exact deep link; after logout neither /dashboard nor Back shows it."""
    target = "/dashboard?tab=2"
    response = _ok(await page.goto(target))
    assert response.status == 200
    path, next_ = path_and_next(page.url)
    assert (path, next_) == ("/login", [target])
    await expect(page.locator("form[action='/login'] input[name=next]")).to_have_value(target)
    await expect(page.locator("h1")).to_have_text("Sign in")
    await shot(page, "signin-01-anonymous-deep-link-redirected-to-login")

    await sign_in(page, EMAIL, NAME)
    await page.wait_for_url(f"{stack.url}{target}")
    assert page.url == f"{stack.url}{target}"
    await expect(page.locator("main")).to_contain_text(f"Signed in as {EMAIL}")
    await expect(page.locator("main .facts dd").nth(1)).to_have_text(EMAIL)
    await expect(page.locator("header .who")).to_contain_text(EMAIL)
    assert await session_cookie(page)
    await shot(page, "signin-02-dashboard-after-sign-in")

    response = _ok(await page.reload())
    assert response.status == 200
    assert page.url == f"{stack.url}{target}"
    await expect(page.locator("main")).to_contain_text(f"Signed in as {EMAIL}")
    await shot(page, "signin-03-dashboard-after-reload")

    await page.locator("main form[action='/logout'] button[type=submit]").click()
    await page.wait_for_url(f"{stack.url}/")
    await expect(page.locator("main")).to_contain_text("You are not signed in")
    assert await session_cookie(page) is None
    await shot(page, "signin-04-signed-out-landing")

    # Back to the dashboard's history entry: no-store means Chromium may neither restore it from
    # the back/forward cache nor from the HTTP cache, so it refetches and the gateway redirects.
    response = _ok(await page.go_back())
    await expect(page).to_have_url(url_path_is("/login"))
    assert path_and_next(page.url) == ("/login", [target])
    assert response.request.redirected_from is not None
    assert response.request.redirected_from.url == f"{stack.url}{target}"
    await expect(page.get_by_text(EMAIL)).to_have_count(0)
    await expect(page.locator("h1")).to_have_text("Sign in")
    await shot(page, "signin-05-back-button-after-logout-shows-login")

    response = _ok(await page.goto("/dashboard"))
    assert response.status == 200
    assert path_and_next(page.url) == ("/login", ["/dashboard"])
    await expect(page.get_by_text(EMAIL)).to_have_count(0)
    await shot(page, "signin-06-dashboard-after-logout-redirects-to-login")


async def test_back_button_after_logout_with_bfcache_does_not_restore_dashboard(
    stack: DemoStack,
) -> None:
    """With Chrome's back/forward cache on, as in a real Chrome, Back after logout shows login."""
    async with chromium(bfcache=True) as browser:
        context = await browser.new_context(
            base_url=stack.url, viewport={"width": 1024, "height": 720}
        )
        context.set_default_timeout(WAIT_MS)
        page = await context.new_page()
        await page.goto("/dashboard?tab=2")
        await sign_in(page, EMAIL, NAME)
        await page.wait_for_url(f"{stack.url}/dashboard?tab=2")
        await expect(page.locator("main")).to_contain_text(f"Signed in as {EMAIL}")
        await page.locator("main form[action='/logout'] button[type=submit]").click()
        await page.wait_for_url(f"{stack.url}/")
        assert await session_cookie(page) is None

        # A page restored from the back/forward cache fires no second load event, so wait for
        # the commit and the document only.
        await page.go_back(wait_until="commit")
        await page.wait_for_function("document.readyState === 'complete'")
        await shot(page, "bfcache-01-back-button-after-logout")
        await expect(page).to_have_url(url_path_is("/login"), timeout=3_000)
        await expect(page.get_by_text(EMAIL)).to_have_count(0)
        await context.close()


async def test_dashboard_shows_the_identity_verified_by_signature(
    stack: DemoStack, page: Page
) -> None:
    """After sign-in the dashboard shows the identity the frontend verified by the gateway's
    signature, and the same page fetched from the frontend directly with forged headers is
    refused."""
    await page.goto("/dashboard")
    await sign_in(page, EMAIL, NAME)
    await page.wait_for_url(f"{stack.url}/dashboard")
    badge = page.locator("main #verified")
    await expect(badge).to_have_text("identity verified by signature")
    await expect(page.locator("main .facts dd").nth(1)).to_have_text(EMAIL)
    await shot(page, "assertion-01-dashboard-identity-verified-by-signature")

    forged = {"X-Auth-User-Id": "usr_1", "X-Auth-User-Email": EMAIL}
    await page.context.set_extra_http_headers(forged)
    response = _ok(await page.goto(f"http://127.0.0.1:{stack.frontend_port}/dashboard"))
    assert response.status == 401
    await expect(page.locator("h1")).to_have_text("Not signed in")
    await expect(page.get_by_text(EMAIL)).to_have_count(0)
    await shot(page, "assertion-02-forged-headers-sent-directly-refused")


# ---------------------------------------------------------------------------------------------
# 2. Live WebSocket + SSE, then the session ends
# ---------------------------------------------------------------------------------------------

# Opens a fresh WebSocket and EventSource from the page, as the app would on reconnect, and
# resolves with what each did; a deadline stands in for "never settled". The outcome is also
# written into the page so the screenshot shows it.
_RECONNECT_JS = """
async (deadlineMs) => {
  const deadline = () =>
    new Promise((resolve) => setTimeout(() => resolve({ timeout: true }), deadlineMs));
  const ws = new Promise((resolve) => {
    const events = [];
    const socket = new WebSocket(`ws://${location.host}/dashboard/ws`);
    socket.onopen = () => events.push("open");
    socket.onmessage = () => events.push("message");
    socket.onerror = () => events.push("error");
    socket.onclose = (event) => {
      events.push("close");
      resolve({ events, code: event.code, wasClean: event.wasClean });
    };
  });
  const sse = new Promise((resolve) => {
    const events = [];
    const source = new EventSource("/dashboard/events");
    source.onopen = () => events.push("open");
    source.onmessage = () => events.push("message");
    source.onerror = () => {
      events.push("error");
      const readyState = source.readyState;
      source.close();
      resolve({ events, readyState });
    };
  });
  const [wsResult, sseResult] = await Promise.all([
    Promise.race([ws, deadline()]),
    Promise.race([sse, deadline()]),
  ]);
  const box = document.createElement("section");
  box.className = "card";
  box.id = "reconnect-result";
  const heading = document.createElement("h2");
  heading.textContent = "Reconnect after the session ended";
  const pre = document.createElement("pre");
  pre.textContent = JSON.stringify({ websocket: wsResult, eventsource: sseResult }, null, 2);
  box.append(heading, pre);
  document.querySelector("main").prepend(box);
  return { ws: wsResult, sse: sseResult };
}
"""


@pytest.mark.parametrize("stack", [0.0], indirect=True, ids=["cache_ttl=0"])
async def test_live_streams_work_then_reconnect_fails_after_session_ends(
    stack: DemoStack, page: Page
) -> None:
    """WebSocket and SSE stream through the gateway; after the session ends, reconnects fail."""
    assert stack.config.auth.cache_ttl == 0.0
    response = _ok(await page.goto("/dashboard/live"))
    assert path_and_next(page.url) == ("/login", ["/dashboard/live"])
    assert response.status == 200
    await sign_in(page, EMAIL, NAME)
    await page.wait_for_url(f"{stack.url}/dashboard/live")

    ws_items = page.locator("#ws-messages li")
    sse_items = page.locator("#sse-messages li")
    await expect(page.locator("#ws-state")).to_have_text("open")
    await expect(page.locator("#sse-state")).to_have_text("open")
    await expect(ws_items.nth(1)).to_be_attached()
    await expect(sse_items.nth(1)).to_be_attached()
    await expect(ws_items.first).to_have_text(f"hello {EMAIL}")
    await expect(sse_items.first).to_have_text("tick 1")
    await expect(sse_items.nth(1)).to_have_text("tick 2")

    message = "echo through the gateway"
    await page.locator("#ws-input").fill(message)
    await page.locator("#ws-form button[type=submit]").click()
    await expect(ws_items.filter(has_text=message)).to_have_count(1)
    await shot(page, "live-01-websocket-and-sse-open")

    # End the session at the auth API, as signing out on another device would.
    token = await session_cookie(page)
    assert token
    cookie = {"Cookie": f"{DEMO_COOKIE}={token}"}
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as http:
        url = f"{stack.api_url}/api/auth/sessions/current"
        async with http.delete(url, headers=cookie) as resp:
            assert resp.status == 204
        url = f"{stack.api_url}/api/auth/sessions/validate"
        async with http.get(url, headers=cookie) as resp:
            assert resp.status == 401

    stream_statuses: list[int] = []
    page.on(
        "response",
        lambda r: stream_statuses.append(r.status) if r.url.endswith("/dashboard/events") else None,
    )
    async with page.expect_console_message(
        lambda m: "WebSocket connection" in m.text and "failed" in m.text
    ) as handshake_failure:
        outcome: dict[str, Any] = await page.evaluate(_RECONNECT_JS, WAIT_MS - 2_000)
    ws, sse = outcome["ws"], outcome["sse"]
    # The upgrade is refused: the socket never opens, errors, and closes abnormally.
    assert "timeout" not in ws, ws
    assert "open" not in ws["events"] and "message" not in ws["events"], ws
    assert ws["events"][-2:] == ["error", "close"], ws
    assert ws["code"] == 1006 and ws["wasClean"] is False, ws
    # ...because the gateway answered the handshake with a status, not because the network failed.
    message = (await handshake_failure.value).text
    # Chromium words a 401 answer to the handshake as an authentication failure.
    assert "HTTP Authentication failed" in message or "Unexpected response code" in message, message
    # The stream is refused with a status, so EventSource gives up (CLOSED) instead of retrying.
    assert "timeout" not in sse, sse
    assert sse == {"events": ["error"], "readyState": 2}, sse
    assert stream_statuses == [401]
    await expect(page.locator("#reconnect-result")).to_be_visible()
    await shot(page, "live-02-reconnect-refused-after-session-ended")

    response = _ok(await page.reload())
    assert response.status == 200
    assert path_and_next(page.url) == ("/login", ["/dashboard/live"])
    await expect(page.locator("#ws-state")).to_have_count(0)
    await shot(page, "live-03-reload-after-session-ended-shows-login")

    _ok(await page.goto("/dashboard"))
    assert path_and_next(page.url) == ("/login", ["/dashboard"])
    await expect(page.get_by_text(EMAIL)).to_have_count(0)


# ---------------------------------------------------------------------------------------------
# 3. fetch() gets JSON, never the login page
# ---------------------------------------------------------------------------------------------

# A plain same-origin fetch, as page scripts make them; the result is also shown in the page.
_FETCH_JS = """
async (path) => {
  const response = await fetch(path);
  const body = await response.text();
  const headers = Object.fromEntries(response.headers.entries());
  const result = {
    status: response.status,
    redirected: response.redirected,
    url: response.url,
    headers,
    body,
  };
  const pre = document.createElement("pre");
  pre.id = "fetch-result";
  pre.className = "card";
  pre.style.whiteSpace = "pre-wrap";
  pre.textContent = `fetch("${path}") -> ${response.status}\\n${JSON.stringify(headers, null, 2)}`
    + `\\n\\n${body}`;
  document.getElementById("fetch-result")?.remove();
  document.querySelector("main").prepend(pre);
  return result;
}
"""


async def test_fetch_gets_401_json_without_session_and_200_json_with_one(
    stack: DemoStack, page: Page
) -> None:
    """fetch() of /dashboard/data.json gets 401 JSON when signed out and 200 JSON when signed in."""
    _ok(await page.goto("/"))
    result: dict[str, Any] = await page.evaluate(_FETCH_JS, "/dashboard/data.json")
    assert result["status"] == 401
    assert result["redirected"] is False
    assert result["url"] == f"{stack.url}/dashboard/data.json"
    headers: dict[str, str] = result["headers"]
    assert headers["content-type"].startswith("application/json")
    assert headers["cache-control"] == "no-store"
    assert headers["www-authenticate"] == f'Cookie realm="{DEMO_COOKIE}"'
    assert "<html" not in result["body"].lower()
    body = json.loads(result["body"])
    assert body["status"] == 401
    assert body["error"] == "Sign-in required"
    assert body["request_id"]
    await shot(page, "fetch-01-signed-out-fetch-gets-401-json")

    # A navigation to the same URL is a person, not a script: it goes to the login page.
    _ok(await page.goto("/dashboard/data.json"))
    assert path_and_next(page.url) == ("/login", ["/dashboard/data.json"])
    await shot(page, "fetch-02-signed-out-navigation-to-json-goes-to-login")
    await sign_in(page, EMAIL, NAME)
    await page.wait_for_url(f"{stack.url}/dashboard/data.json")
    await expect(page.locator("body")).to_contain_text(EMAIL)
    await shot(page, "fetch-03-signed-in-navigation-shows-json")

    _ok(await page.goto("/"))
    result = await page.evaluate(_FETCH_JS, "/dashboard/data.json")
    assert result["status"] == 200
    assert result["redirected"] is False
    assert result["headers"]["content-type"].startswith("application/json")
    data = json.loads(result["body"])
    assert data["user"]["email"] == EMAIL
    assert data["user"]["id"].startswith("usr_")
    assert len(data["items"]) == 3
    await shot(page, "fetch-04-signed-in-fetch-gets-200-json")


# ---------------------------------------------------------------------------------------------
# 4. The gateway's own error pages
# ---------------------------------------------------------------------------------------------


async def _expect_error_page(page: Page, response: Response, status: int, title: str) -> str:
    assert response.status == status
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert response.headers["cache-control"] == "no-store"
    request_id = response.headers["x-request-id"]
    assert request_id
    assert await page.title() == f"{status} {title}"
    await expect(page.locator("main .status")).to_have_text(f"Error {status}")
    await expect(page.locator("main h1")).to_have_text(title)
    await expect(page.locator("main .rid code")).to_have_text(request_id)
    await expect(page.locator("main .rid")).to_contain_text("request id")
    return request_id


async def test_gateway_error_pages_name_the_failure_and_a_request_id(
    stack: DemoStack, page: Page
) -> None:
    """Frontend down: a public page is the gateway's 502 page with a request id; auth down: 503."""
    response = _ok(await page.goto("/"))
    assert response.status == 200
    await expect(page.locator("h1")).to_have_text("Welcome to the hamrah demo")

    await stack.stop_frontend()
    response = _ok(await page.reload())
    first_id = await _expect_error_page(page, response, 502, "Application unreachable")
    await expect(page.locator("main")).to_contain_text("The application could not be reached")
    await shot(page, "errors-01-frontend-down-502")

    response = _ok(await page.goto("/settings"))
    # Anonymous: the gateway redirects to /login, which is public and also unreachable.
    assert path_and_next(page.url) == ("/login", ["/settings"])
    second_id = await _expect_error_page(page, response, 502, "Application unreachable")
    assert second_id != first_id

    await stack.stop_api()
    await page.context.add_cookies(
        [{"name": DEMO_COOKIE, "value": "some-session-token", "url": stack.url}]
    )
    response = _ok(await page.goto("/dashboard"))
    assert page.url == f"{stack.url}/dashboard"
    await _expect_error_page(page, response, 503, "Sign-in service unavailable")
    await expect(page.locator("main")).to_contain_text("The auth API could not be reached")
    await shot(page, "errors-02-auth-api-down-503")
