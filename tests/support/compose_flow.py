"""Drive the sign-in flow through a running gateway over plain HTTP (standard library only).

    python tests/support/compose_flow.py http://127.0.0.1:8080 [--timeout 120]

Meant for the docker-compose stack (.ci/compose_smoke.sh) but works against any gateway in front
of the demo frontend and auth API: waits until the stack answers, then checks that

  1. an anonymous browser asking for /dashboard is sent to /login?next=%2Fdashboard (302),
  2. an API client asking for it gets 401 JSON instead of a redirect,
  3. a forged session cookie is refused like no cookie at all,
  4. POST /login sets the session cookie and sends the browser back to /dashboard (303),
  5. /dashboard with that cookie is the user's page (200, shows the email),
  6. GET /logout clears the cookie (303),
  7. /dashboard without a cookie is a redirect to /login again.

Exits 0 when all hold, 1 at the first mismatch (saying what was expected and what came), 2 when
the stack did not become ready before the deadline. No redirect is followed and no cookie jar is
kept: every request says exactly what it sends.
"""

from __future__ import annotations

import argparse
import http.client
import os
import sys
import time
from dataclasses import dataclass
from http.cookies import CookieError, SimpleCookie
from urllib.parse import urlencode, urlsplit

EMAIL = "ada@example.com"
NAME = "Ada"
COOKIE = os.environ.get("AUTH_COOKIE") or "session"
LOGIN_REDIRECT = "/login?next=%2Fdashboard"
REQUEST_TIMEOUT = 10.0
POLL_INTERVAL = 0.5


class FlowError(Exception):
    """A response that is not what the flow expects."""


@dataclass
class Reply:
    status: int
    headers: http.client.HTTPMessage
    body: str

    def excerpt(self, limit: int = 300) -> str:
        text = " ".join(self.body.split())
        return text if len(text) <= limit else text[:limit] + "..."


class Client:
    """One HTTP/1.1 request per connection to BASE_URL, nothing implicit."""

    def __init__(self, base_url: str) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise SystemExit(
                f"compose_flow: BASE_URL must be http(s)://host[:port], got {base_url!r}"
            )
        self.scheme = parts.scheme
        self.host = parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.prefix = parts.path.rstrip("/")

    def request(
        self,
        method: str,
        path: str,
        headers: dict[str, str] | None = None,
        body: bytes | None = None,
    ) -> Reply:
        cls = http.client.HTTPSConnection if self.scheme == "https" else http.client.HTTPConnection
        conn = cls(self.host, self.port, timeout=REQUEST_TIMEOUT)
        try:
            conn.request(method, self.prefix + path, body=body, headers=headers or {})
            response = conn.getresponse()
            data = response.read()
            return Reply(response.status, response.headers, data.decode("utf-8", "replace"))
        finally:
            conn.close()


def wait_ready(client: Client, deadline: float) -> None:
    """Poll GET / (public: gateway and frontend) until it answers 200, or give up at deadline."""
    last = "no answer yet"
    while True:
        try:
            reply = client.request("GET", "/", {"Accept": "text/html"})
            if reply.status == 200:
                return
            last = f"GET / answered {reply.status}"
        except OSError as exc:
            last = f"GET / failed: {exc!r}"
        if time.monotonic() >= deadline:
            print(f"compose_flow: FAIL: the stack did not become ready in time ({last})")
            raise SystemExit(2)
        time.sleep(POLL_INTERVAL)


def expect_status(step: str, reply: Reply, status: int) -> None:
    if reply.status != status:
        raise FlowError(f"{step}: expected status {status}, got {reply.status}: {reply.excerpt()}")


def expect_location(step: str, reply: Reply, want: str) -> None:
    location = reply.headers.get("Location")
    if location is None:
        raise FlowError(f"{step}: expected Location {want!r}, got no Location header")
    parts = urlsplit(location)
    # A relative Location is what the gateway and the demo send; an absolute one to the same
    # path would be fine too.
    got = parts.path + (f"?{parts.query}" if parts.query else "")
    if got != want:
        raise FlowError(f"{step}: expected Location {want!r}, got {location!r}")


def session_cookie(step: str, reply: Reply) -> tuple[str, dict[str, str]]:
    """The value and attributes of the session cookie that reply sets; FlowError if none."""
    for header in reply.headers.get_all("Set-Cookie") or []:
        jar: SimpleCookie = SimpleCookie()
        try:
            jar.load(header)
        except CookieError as exc:
            raise FlowError(f"{step}: unparsable Set-Cookie {header!r}: {exc}") from None
        if COOKIE in jar:
            morsel = jar[COOKIE]
            attrs = {key: str(morsel[key]) for key in morsel if morsel[key] not in ("", False)}
            return morsel.value, attrs
    raise FlowError(
        f"{step}: expected Set-Cookie {COOKIE}=..., got {reply.headers.get_all('Set-Cookie')!r}"
    )


def login(client: Client, deadline: float) -> Reply:
    """POST /login; the auth API may still be starting: 502/503/504 are retried until deadline."""
    form = urlencode({"email": EMAIL, "name": NAME, "next": "/dashboard"}).encode()
    headers = {"Content-Type": "application/x-www-form-urlencoded", "Accept": "text/html"}
    while True:
        reply = client.request("POST", "/login", headers, form)
        if reply.status not in (502, 503, 504) or time.monotonic() >= deadline:
            return reply
        time.sleep(POLL_INTERVAL)


def run(client: Client, deadline: float, passed: list[str]) -> None:
    """Each step in order; appends a line to passed per step that held, raises at the first not."""
    browser = {"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"}

    step = "anonymous GET /dashboard"
    reply = client.request("GET", "/dashboard", browser)
    expect_status(step, reply, 302)
    expect_location(step, reply, LOGIN_REDIRECT)
    passed.append(f"{step} -> 302 {LOGIN_REDIRECT}")

    step = "anonymous GET /dashboard as an API client"
    reply = client.request("GET", "/dashboard", {"Accept": "application/json"})
    expect_status(step, reply, 401)
    if "json" not in reply.headers.get("Content-Type", ""):
        raise FlowError(f"{step}: expected a JSON body, got {reply.headers.get('Content-Type')!r}")
    passed.append(f"{step} -> 401 JSON")

    step = "GET /dashboard with a forged session cookie"
    reply = client.request("GET", "/dashboard", {**browser, "Cookie": f"{COOKIE}=forged-token"})
    expect_status(step, reply, 302)
    expect_location(step, reply, LOGIN_REDIRECT)
    passed.append(f"{step} -> 302 {LOGIN_REDIRECT}")

    step = "POST /login"
    reply = login(client, deadline)
    expect_status(step, reply, 303)
    expect_location(step, reply, "/dashboard")
    token, attrs = session_cookie(step, reply)
    if not token:
        raise FlowError(f"{step}: the {COOKIE} cookie it set is empty")
    if "httponly" not in attrs:
        raise FlowError(f"{step}: the {COOKIE} cookie is not HttpOnly: {attrs!r}")
    passed.append(f"{step} -> 303 /dashboard, Set-Cookie {COOKIE}=<{len(token)} chars>; HttpOnly")

    step = "GET /dashboard signed in"
    cookie = {"Cookie": f"{COOKIE}={token}"}
    reply = client.request("GET", "/dashboard", {**browser, **cookie})
    expect_status(step, reply, 200)
    if EMAIL not in reply.body:
        raise FlowError(f"{step}: the page does not show {EMAIL}: {reply.excerpt()}")
    passed.append(f"{step} -> 200, shows {EMAIL}")

    step = "GET /logout"
    reply = client.request("GET", "/logout", {**browser, **cookie})
    expect_status(step, reply, 303)
    value, attrs = session_cookie(step, reply)
    expired = attrs.get("max-age") == "0" or "1970" in attrs.get("expires", "")
    if value or not expired:
        raise FlowError(f"{step}: expected the {COOKIE} cookie cleared, got {value!r} {attrs!r}")
    passed.append(f"{step} -> 303, {COOKIE} cookie cleared")

    step = "GET /dashboard after sign-out, without the cookie"
    reply = client.request("GET", "/dashboard", browser)
    expect_status(step, reply, 302)
    expect_location(step, reply, LOGIN_REDIRECT)
    passed.append(f"{step} -> 302 {LOGIN_REDIRECT}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument(
        "base_url",
        nargs="?",
        default=os.environ.get("BASE_URL", "http://127.0.0.1:8080"),
        help="the gateway's address (default: $BASE_URL or http://127.0.0.1:8080)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=120.0,
        help="seconds to wait for the stack to become ready (default 120)",
    )
    args = parser.parse_args(argv)
    client = Client(args.base_url)
    started = time.monotonic()
    deadline = started + args.timeout
    wait_ready(client, deadline)
    print(f"compose_flow: {args.base_url} ready after {time.monotonic() - started:.1f}s")
    passed: list[str] = []
    failure: str | None = None
    try:
        run(client, deadline, passed)
    except (FlowError, OSError) as exc:
        failure = str(exc) if isinstance(exc, FlowError) else f"request failed: {exc!r}"
    for line in passed:
        print(f"compose_flow: ok: {line}")
    if failure is not None:
        print(f"compose_flow: FAIL: {failure}")
    print(f"compose_flow: {len(passed)} passed, {0 if failure is None else 1} failed")
    return 0 if failure is None else 1


if __name__ == "__main__":
    sys.exit(main())
