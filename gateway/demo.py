"""Demo stand-ins for hamrah-api and the hamrah.app frontend, so the gateway can be run end to end.

The auth API keeps sessions in memory and accepts any email: it exists to exercise the gateway's
validate call, not to authenticate anyone. The frontend trusts only the identity the gateway
asserts on protected paths, which is exactly the contract a real app behind the gateway relies on:
with an AssertionCheck, only an identity signed by the gateway (forged headers are refused);
without one, the identity headers.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import itertools
import re
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from html import escape
from typing import NamedTuple, TypedDict
from urllib.parse import unquote

import aiohttp
import structlog
from aiohttp import web
from yarl import URL

from gateway.demo_verify import AssertionCheck

DEMO_COOKIE = "session"

_DEFAULT_NEXT = "/dashboard"
_USER_ID_HEADER = "X-Auth-User-Id"
_USER_EMAIL_HEADER = "X-Auth-User-Email"
_MAX_EMAIL = 254
_MAX_NAME = 100
# Bounds memory if a publicly reachable demo gets hammered with sign-ins; the oldest go first.
_MAX_SESSIONS = 10_000
# Long enough for a slow container start, short enough that a dead API fails the form quickly.
_API_TIMEOUT = aiohttp.ClientTimeout(total=5)
_TICK_SECONDS = 1.0
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+")

log = structlog.get_logger(__name__)


class DemoUser(TypedDict):
    """The user object the demo API returns from validate, shaped like hamrah-api's."""

    id: str
    email: str
    name: str
    roles: list[str]
    email_verified: bool


class _Identity(NamedTuple):
    id: str
    email: str
    # True when it came from a verified assertion, not from plain headers.
    verified: bool = False


_SESSIONS = web.AppKey("demo_sessions", dict[str, DemoUser])
_API_BASE = web.AppKey("demo_api_base", str)
_HTTP = web.AppKey("demo_http", aiohttp.ClientSession)
_ASSERTION = web.AppKey("demo_assertion", AssertionCheck)


# ---------------------------------------------------------------------------------------------
# Demo auth API
# ---------------------------------------------------------------------------------------------


def build_auth_api() -> web.Application:
    """The demo hamrah-api: create, validate and end cookie sessions."""
    app = web.Application()
    app[_SESSIONS] = {}
    app.router.add_post("/api/auth/sessions", _create_session)
    app.router.add_get("/api/auth/sessions/validate", _validate_session)
    app.router.add_delete("/api/auth/sessions/current", _end_session)
    app.router.add_get("/healthz", _healthz)
    return app


def _json_error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def _demo_user(email: str, name: str) -> DemoUser:
    # Derived from the email so signing in twice as the same person yields the same id.
    user_id = "usr_" + hashlib.sha256(email.encode()).hexdigest()[:20]
    roles = ["user", "admin"] if email.startswith("admin@") else ["user"]
    return {"id": user_id, "email": email, "name": name, "roles": roles, "email_verified": True}


async def _create_session(request: web.Request) -> web.Response:
    try:
        body = await request.json()
    except ValueError:
        return _json_error(400, "body must be JSON")
    if not isinstance(body, dict):
        return _json_error(400, "body must be a JSON object")
    email = body.get("email")
    name = body.get("name", "")
    if (
        not isinstance(email, str)
        or len(email) > _MAX_EMAIL
        or not email.isprintable()
        or not _EMAIL.fullmatch(email.strip())
    ):
        return _json_error(400, "a valid email is required")
    if not isinstance(name, str) or len(name) > _MAX_NAME or not name.isprintable():
        return _json_error(400, f"name must be printable text of at most {_MAX_NAME} characters")
    email = email.strip().lower()
    user = _demo_user(email, name.strip() or email.partition("@")[0])
    sessions = request.app[_SESSIONS]
    if len(sessions) >= _MAX_SESSIONS:
        del sessions[next(iter(sessions))]
    token = secrets.token_urlsafe(32)
    sessions[token] = user
    return web.json_response({"token": token, "user": user}, status=201)


async def _validate_session(request: web.Request) -> web.Response:
    # Only the cookie counts: the gateway's contract is cookie-in, user-out, so bearer tokens or
    # query parameters must not be able to stand in for a session.
    token = request.cookies.get(DEMO_COOKIE)
    user = request.app[_SESSIONS].get(token) if token else None
    if user is None:
        return _json_error(401, "invalid session")
    return web.json_response(user)


async def _end_session(request: web.Request) -> web.Response:
    token = request.cookies.get(DEMO_COOKIE)
    if token:
        request.app[_SESSIONS].pop(token, None)
    # Ending an unknown session still succeeds, so signing out is idempotent.
    return web.Response(status=204)


async def _healthz(_request: web.Request) -> web.Response:
    return web.Response(text="ok")


# ---------------------------------------------------------------------------------------------
# Demo frontend
# ---------------------------------------------------------------------------------------------


def build_frontend(api_url: str, assertion: AssertionCheck | None = None) -> web.Application:
    """The demo hamrah.app frontend; api_url is the demo API's base, e.g. http://127.0.0.1:8787.

    With `assertion`, a signed-in page needs the gateway's verified signature, not just headers.
    """
    base = URL(api_url)
    if base.scheme not in ("http", "https") or not base.host:
        raise ValueError(f"api_url must be an absolute http(s) URL, got {api_url!r}")
    app = web.Application()
    app[_API_BASE] = str(base).rstrip("/")
    if assertion is not None:
        app[_ASSERTION] = assertion
    app.cleanup_ctx.append(_http_client)
    app.router.add_get("/", _landing)
    app.router.add_get("/login", _login_form)
    app.router.add_post("/login", _login)
    app.router.add_get("/logout", _logout)
    app.router.add_post("/logout", _logout)
    app.router.add_get("/dashboard", _dashboard)
    app.router.add_get("/dashboard/live", _live_page)
    app.router.add_get("/dashboard/ws", _live_ws)
    app.router.add_get("/dashboard/events", _live_events)
    app.router.add_get("/dashboard/data.json", _dashboard_data)
    app.router.add_get("/settings", _settings)
    app.router.add_get("/profile", _profile)
    app.router.add_get("/healthz", _healthz)
    return app


async def _http_client(app: web.Application) -> AsyncIterator[None]:
    # A dummy jar: the frontend calls the API for many users, and a shared jar would leak one
    # user's cookies into another's requests.
    async with aiohttp.ClientSession(
        timeout=_API_TIMEOUT, cookie_jar=aiohttp.DummyCookieJar()
    ) as session:
        app[_HTTP] = session
        yield


async def _identity(request: web.Request) -> _Identity | None:
    """Who the gateway says is signed in: from the verified assertion when the app checks one
    (headers alone are then never believed), else from the identity headers."""
    check = request.app.get(_ASSERTION)
    if check is not None:
        claims = await check.claims(request.headers, request.app[_HTTP])
        if claims is None:
            return None
        return _Identity(str(claims["sub"]), str(claims.get("email", "")), verified=True)
    user_id = request.headers.get(_USER_ID_HEADER, "").strip()
    email = request.headers.get(_USER_EMAIL_HEADER, "").strip()
    return _Identity(user_id, email) if user_id and email else None


_IdentityHandler = Callable[[web.Request, _Identity], Awaitable[web.StreamResponse]]


def _protected(handler: _IdentityHandler) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """Hand the gateway-asserted identity to handler; without it, explain instead of guessing."""

    @functools.wraps(handler)
    async def wrapper(request: web.Request) -> web.StreamResponse:
        user = await _identity(request)
        if user is None:
            body = (
                '<section class="card narrow"><h1>Not signed in</h1>'
                "<p>This page is served through hamrah-gateway, which tells the app who is "
                "signed in. The request arrived without that identity (or, where the app checks "
                "the gateway's signature, without a valid signature), so it was probably sent "
                "to the app directly.</p>"
                '<p><a class="btn" href="/login">Sign in</a></p></section>'
            )
            return _html("Not signed in", body, email=None, status=401, no_store=True)
        return await handler(request, user)

    return wrapper


def _is_local_path(raw: str) -> bool:
    """Whether raw is a same-origin path, safe to redirect to after sign-in.

    Checked both as given and percent-decoded, because a value may be decoded once more by
    whatever consumes it next; a leading "//" or "/\\" would turn it into another host.
    """
    # The gateway passes the original request target, which is printable ASCII on the wire;
    # anything else did not come from it.
    if not raw or not all("!" <= ch <= "~" for ch in raw):
        return False
    for candidate in (raw, unquote(raw)):
        # A single leading "/" rules out a scheme and an authority.
        if not candidate.startswith("/") or candidate[1:2] in ("/", "\\"):
            return False
        # Browsers strip tabs and newlines from URLs, so "/\t/evil" would become "//evil".
        if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in candidate):
            return False
    return True


def _safe_next(raw: str) -> str:
    return raw if _is_local_path(raw) else _DEFAULT_NEXT


class _SignInFailed(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


async def _start_session(app: web.Application, email: str, name: str) -> str:
    """A new session token from the API; raises _SignInFailed with what to tell the user."""
    url = f"{app[_API_BASE]}/api/auth/sessions"
    try:
        async with app[_HTTP].post(url, json={"email": email, "name": name}) as resp:
            if resp.status == 400:
                raise _SignInFailed(400, "Enter a valid email address and a shorter name.")
            if resp.status != 201:
                log.warning("demo_signin_rejected", status=resp.status)
                raise _SignInFailed(502, "The sign-in service is unavailable; try again.")
            payload = await resp.json()
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        log.warning("demo_signin_unreachable", error=repr(exc))
        raise _SignInFailed(502, "The sign-in service is unavailable; try again.") from exc
    token = payload.get("token") if isinstance(payload, dict) else None
    if not isinstance(token, str) or not token:
        log.warning("demo_signin_bad_payload")
        raise _SignInFailed(502, "The sign-in service is unavailable; try again.")
    return token


def _form_text(form: Mapping[str, object], key: str) -> str:
    # Uploads and repeated odd fields are not text; treat them as absent.
    value = form.get(key)
    return value if isinstance(value, str) else ""


async def _landing(request: web.Request) -> web.Response:
    user = await _identity(request)
    email = user.email if user is not None else None
    status = (
        f"<p>You are signed in as <strong>{escape(email)}</strong>.</p>"
        if email
        else '<p class="muted">You are not signed in.</p>'
    )
    body = f"""<section class="card">
<h1>Welcome to the hamrah demo</h1>
<p>This app sits behind hamrah-gateway. <code>/dashboard</code>, <code>/settings</code> and
<code>/profile</code> are protected: the gateway checks your session before the app sees the
request.</p>
{status}
<p class="actions"><a class="btn" href="/dashboard">Dashboard</a>
<a class="btn secondary" href="/settings">Settings</a>
<a class="btn secondary" href="/login">Login</a></p>
</section>"""
    return _html("Home", body, email=email)


def _login_page(
    *, next_: str, email: str = "", name: str = "", error: str | None = None, status: int = 200
) -> web.Response:
    alert = f'<p class="error" role="alert">{escape(error)}</p>' if error else ""
    body = f"""<section class="card narrow">
<h1>Sign in</h1>
<p class="muted">Demo sign-in: any email works; one starting with <code>admin@</code> also gets
the admin role.</p>
{alert}
<form method="post" action="/login">
<input type="hidden" name="next" value="{escape(next_)}">
<label for="email">Email</label>
<input id="email" name="email" type="email" required autocomplete="email" autofocus
 maxlength="{_MAX_EMAIL}" value="{escape(email)}" placeholder="you@example.com">
<label for="name">Display name</label>
<input id="name" name="name" type="text" autocomplete="name" maxlength="{_MAX_NAME}"
 value="{escape(name)}" placeholder="Your name">
<button class="btn wide" type="submit">Sign in</button>
</form>
</section>"""
    return _html("Sign in", body, email=None, status=status, no_store=True)


async def _login_form(request: web.Request) -> web.Response:
    return _login_page(next_=request.query.get("next", ""))


async def _login(request: web.Request) -> web.Response:
    form = await request.post()
    email = _form_text(form, "email").strip()
    name = _form_text(form, "name").strip()
    next_ = _form_text(form, "next")
    if not email:
        return _login_page(next_=next_, name=name, error="Enter your email address.", status=400)
    try:
        token = await _start_session(request.app, email, name)
    except _SignInFailed as exc:
        return _login_page(
            next_=next_, email=email, name=name, error=exc.message, status=exc.status
        )
    response = web.Response(status=303, headers={"Location": _safe_next(next_)})
    # No Secure flag: the demo is served over plain http on localhost and in docker-compose.
    response.set_cookie(DEMO_COOKIE, token, path="/", httponly=True, samesite="Lax")
    return response


async def _logout(request: web.Request) -> web.Response:
    token = request.cookies.get(DEMO_COOKIE)
    if token:
        url = f"{request.app[_API_BASE]}/api/auth/sessions/current"
        try:
            async with request.app[_HTTP].delete(
                url, headers={"Cookie": f"{DEMO_COOKIE}={token}"}
            ) as resp:
                if resp.status != 204:
                    log.warning("demo_signout_rejected", status=resp.status)
        except (aiohttp.ClientError, TimeoutError) as exc:
            # The browser still loses its cookie, which is what the user asked for.
            log.warning("demo_signout_unreachable", error=repr(exc))
    response = web.Response(status=303, headers={"Location": "/"})
    response.del_cookie(DEMO_COOKIE, path="/", httponly=True, samesite="Lax")
    return response


def _facts(user: _Identity) -> str:
    how = (
        '<span class="verified" id="verified">identity verified by signature</span>'
        if user.verified
        else "identity headers (not signed)"
    )
    return f"""<dl class="facts">
<dt>User id</dt><dd>{escape(user.id)}</dd>
<dt>Email</dt><dd>{escape(user.email)}</dd>
<dt>Proof</dt><dd>{how}</dd>
</dl>"""


@_protected
async def _dashboard(_request: web.Request, user: _Identity) -> web.Response:
    body = f"""<section class="card">
<h1>Dashboard</h1>
<p>Signed in as <strong>{escape(user.email)}</strong>. The gateway validated your session and
told the app who you are:</p>
{_facts(user)}
</section>
<section class="card">
<h2>Try it</h2>
<p class="actions"><a class="btn" href="/dashboard/live">Live updates</a>
<a class="btn secondary" href="/dashboard/data.json">data.json</a>
<a class="btn secondary" href="/settings">Settings</a>
<a class="btn secondary" href="/profile">Profile</a></p>
<form method="post" action="/logout"><button class="btn danger" type="submit">Sign out</button>
</form>
</section>"""
    return _html("Dashboard", body, email=user.email, no_store=True)


_LIVE_SCRIPT = """<script>
(() => {
  "use strict";
  // Bounded so a tab left open for hours does not grow without limit.
  const MAX_ITEMS = 500;
  const append = (id, text) => {
    const list = document.getElementById(id);
    const item = document.createElement("li");
    item.textContent = text;
    list.append(item);
    while (list.children.length > MAX_ITEMS) list.firstElementChild.remove();
    list.scrollTop = list.scrollHeight;
  };
  const setState = (id, state) => {
    const el = document.getElementById(id);
    el.textContent = state;
    el.dataset.state = state;
  };

  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  const ws = new WebSocket(`${scheme}//${location.host}/dashboard/ws`);
  ws.onopen = () => setState("ws-state", "open");
  ws.onmessage = (event) => append("ws-messages", String(event.data));
  ws.onerror = () => setState("ws-state", "error");
  // Keep "error" visible: a rejected upgrade fires error and then close.
  ws.onclose = () => {
    const state = document.getElementById("ws-state").dataset.state;
    if (state !== "error") setState("ws-state", "closed");
  };
  document.getElementById("ws-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const input = document.getElementById("ws-input");
    if (ws.readyState === WebSocket.OPEN && input.value) {
      ws.send(input.value);
      input.value = "";
    }
  });

  const events = new EventSource("/dashboard/events");
  events.onopen = () => setState("sse-state", "open");
  events.onmessage = (event) => append("sse-messages", event.data);
  events.onerror = () =>
    setState("sse-state", events.readyState === EventSource.CLOSED ? "closed" : "error");
})();
</script>"""


@_protected
async def _live_page(_request: web.Request, user: _Identity) -> web.Response:
    body = f"""<section class="card">
<h1>Live updates</h1>
<noscript><p class="error">This page needs JavaScript to open the connections.</p></noscript>
<p class="muted">A WebSocket and a server-sent event stream, both through the gateway.</p>
</section>
<div class="grid">
<section class="card">
<h2>WebSocket <span id="ws-state" class="state" data-state="connecting">connecting</span></h2>
<form id="ws-form" class="inline">
<input id="ws-input" type="text" placeholder="Message to echo" aria-label="Message to echo">
<button class="btn" type="submit">Send</button>
</form>
<ul id="ws-messages" class="log"></ul>
</section>
<section class="card">
<h2>Server-sent events <span id="sse-state" class="state" data-state="connecting">connecting</span>
</h2>
<ul id="sse-messages" class="log"></ul>
</section>
</div>
{_LIVE_SCRIPT}"""
    return _html("Live updates", body, email=user.email, no_store=True)


async def _tick_ws(ws: web.WebSocketResponse) -> None:
    for n in itertools.count(1):
        await asyncio.sleep(_TICK_SECONDS)
        if ws.closed:
            return
        try:
            await ws.send_str(f"tick {n}")
        except ConnectionResetError:
            return


@_protected
async def _live_ws(request: web.Request, user: _Identity) -> web.WebSocketResponse:
    ws = web.WebSocketResponse(heartbeat=30.0)
    await ws.prepare(request)
    await ws.send_str(f"hello {user.email}")
    ticker = asyncio.create_task(_tick_ws(ws))
    try:
        async for msg in ws:
            if msg.type is aiohttp.WSMsgType.TEXT:
                await ws.send_str(msg.data)
            elif msg.type is aiohttp.WSMsgType.BINARY:
                await ws.send_bytes(msg.data)
    finally:
        ticker.cancel()
        await asyncio.gather(ticker, return_exceptions=True)
    return ws


@_protected
async def _live_events(request: web.Request, _user: _Identity) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Cache-Control": "no-store"})
    response.content_type = "text/event-stream"
    await response.prepare(request)
    try:
        for n in itertools.count(1):
            await response.write(f"data: tick {n}\n\n".encode())
            await asyncio.sleep(_TICK_SECONDS)
    except ConnectionResetError:
        # The client went away; a stream has no other way to end.
        pass
    return response


_DEMO_ITEMS = [
    {"id": 1, "title": "Read the gateway README", "done": True},
    {"id": 2, "title": "Open the live updates page", "done": False},
    {"id": 3, "title": "Sign out and watch the redirect", "done": False},
]


@_protected
async def _dashboard_data(_request: web.Request, user: _Identity) -> web.Response:
    return web.json_response(
        {"user": {"id": user.id, "email": user.email}, "items": _DEMO_ITEMS},
        headers={"Cache-Control": "no-store"},
    )


@_protected
async def _settings(_request: web.Request, user: _Identity) -> web.Response:
    body = f"""<section class="card">
<h1>Settings</h1>
<p>Settings for <strong>{escape(user.email)}</strong>. Nothing here is saved; the page exists to
show a second protected prefix.</p>
<dl class="facts">
<dt>Theme</dt><dd>system</dd>
<dt>Email updates</dt><dd>off</dd>
</dl>
</section>"""
    return _html("Settings", body, email=user.email, no_store=True)


@_protected
async def _profile(_request: web.Request, user: _Identity) -> web.Response:
    body = f"""<section class="card">
<h1>Profile</h1>
{_facts(user)}
</section>"""
    return _html("Profile", body, email=user.email, no_store=True)


# ---------------------------------------------------------------------------------------------
# Layout
# ---------------------------------------------------------------------------------------------

_CSS = """
:root { --bg: #f6f7f9; --fg: #1f2328; --muted: #59636e; --card: #fff; --line: #d8dee4;
        --accent: #4f46e5; --accent-hover: #4338ca; --danger: #b42318; }
* { box-sizing: border-box; }
body { margin: 0; background: var(--bg); color: var(--fg);
       font: 16px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; }
a { color: var(--accent); }
code, dd, .log { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; }
code { font-size: .9em; padding: .05rem .3rem; background: #eceff3; border-radius: 4px; }
.bar { display: flex; align-items: center; gap: 1.5rem; padding: .7rem 1.5rem;
       background: #111827; color: #f9fafb; flex-wrap: wrap; }
.brand { color: inherit; font-weight: 700; text-decoration: none; letter-spacing: .01em; }
.bar nav { display: flex; gap: 1rem; }
.bar nav a { color: #cbd5e1; text-decoration: none; font-size: .95rem; }
.bar nav a:hover { color: #fff; }
.who { margin-left: auto; display: flex; align-items: center; gap: .75rem; font-size: .9rem;
       color: #cbd5e1; }
.who strong { color: #fff; font-weight: 600; }
.who form { margin: 0; }
.who .btn { padding: .25rem .75rem; font-size: .85rem; background: transparent;
            border-color: #4b5563; color: #f9fafb; }
.who .btn:hover { background: #1f2937; }
main { max-width: 56rem; margin: 2rem auto; padding: 0 1.25rem; }
.card { background: var(--card); border: 1px solid var(--line); border-radius: 12px;
        padding: 1.5rem 1.75rem; margin-bottom: 1.25rem; }
.narrow { max-width: 26rem; margin-left: auto; margin-right: auto; }
h1 { margin: 0 0 .75rem; font-size: 1.6rem; line-height: 1.25; }
h2 { margin: 0 0 .75rem; font-size: 1.15rem; }
p { margin: 0 0 1rem; }
p:last-child { margin-bottom: 0; }
.muted { color: var(--muted); }
.actions { display: flex; flex-wrap: wrap; gap: .5rem; }
.btn { display: inline-block; padding: .5rem 1rem; border: 1px solid transparent;
       border-radius: 8px; background: var(--accent); color: #fff; font: inherit;
       font-weight: 500; text-decoration: none; cursor: pointer; }
.btn:hover { background: var(--accent-hover); }
.btn.secondary { background: var(--card); color: var(--fg); border-color: var(--line); }
.btn.secondary:hover { background: #f0f2f5; }
.btn.danger { background: var(--card); color: var(--danger); border-color: #f1b5ae; }
.btn.danger:hover { background: #fef3f2; }
.btn.wide { width: 100%; }
label { display: block; margin-bottom: .3rem; font-weight: 600; font-size: .95rem; }
input[type=email], input[type=text] { width: 100%; margin-bottom: 1rem; padding: .55rem .7rem;
       border: 1px solid var(--line); border-radius: 8px; font: inherit; background: #fff; }
input:focus { outline: 2px solid var(--accent); outline-offset: 1px; border-color: transparent; }
.error { padding: .65rem .9rem; border: 1px solid #fecdca; border-radius: 8px;
         background: #fef3f2; color: var(--danger); }
.facts { display: grid; grid-template-columns: max-content 1fr; gap: .4rem 1.5rem; margin: 0; }
.facts dt { color: var(--muted); }
.facts dd { margin: 0; word-break: break-all; }
.verified { padding: .1rem .55rem; border-radius: 999px; background: #dcfae6; color: #067647;
            font-family: system-ui, sans-serif; font-size: .85rem; font-weight: 600; }
.grid { display: grid; grid-template-columns: repeat(auto-fit, minmax(20rem, 1fr));
        gap: 1.25rem; }
.grid .card { margin-bottom: 0; }
.inline { display: flex; gap: .5rem; }
.inline input { margin-bottom: 0; }
.state { margin-left: .4rem; padding: .1rem .55rem; border-radius: 999px; background: #eceff3;
         color: var(--muted); font-size: .75rem; font-weight: 600; vertical-align: middle; }
.state[data-state=open] { background: #dcfae6; color: #067647; }
.state[data-state=error] { background: #fee4e2; color: var(--danger); }
.log { list-style: none; height: 16rem; margin: .75rem 0 0; padding: 0; overflow: auto;
       border: 1px solid var(--line); border-radius: 8px; font-size: .85rem; }
.log li { padding: .3rem .6rem; border-bottom: 1px solid #eef0f3; }
"""


def _layout(title: str, body: str, *, email: str | None) -> str:
    """Wrap body (already-escaped HTML) in the shared page chrome."""
    restore_guard = ""
    if email:
        who = (
            f"<span>Signed in as <strong>{escape(email)}</strong></span>"
            '<form method="post" action="/logout"><button class="btn" type="submit">Sign out'
            "</button></form>"
        )
        # Chrome's back/forward cache can restore a signed-in page after sign-out even with
        # Cache-Control: no-store; a restored page asks the server (and the gateway) again.
        restore_guard = (
            "<script>addEventListener('pageshow', e => { if (e.persisted) location.reload(); });"
            "</script>"
        )
    else:
        who = '<span>Not signed in</span><a class="btn" href="/login">Sign in</a>'
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{escape(title)} · hamrah demo</title>
<style>{_CSS}</style>
{restore_guard}
</head>
<body>
<header class="bar">
<a class="brand" href="/">hamrah demo</a>
<nav><a href="/dashboard">Dashboard</a><a href="/settings">Settings</a>
<a href="/profile">Profile</a></nav>
<div class="who">{who}</div>
</header>
<main>
{body}
</main>
</body>
</html>
"""


def _html(
    title: str, body: str, *, email: str | None, status: int = 200, no_store: bool = False
) -> web.Response:
    response = web.Response(
        text=_layout(title, body, email=email),
        status=status,
        content_type="text/html",
        charset="utf-8",
    )
    if no_store:
        # Pages naming a user must not be served from a shared or back-button cache to someone
        # else after sign-out.
        response.headers["Cache-Control"] = "no-store"
    return response
