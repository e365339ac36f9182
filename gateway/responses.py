"""The gateway's own answers, and the rules it applies to the app's answers.

Every answer the gateway writes itself (a refusal, a sign-in redirect, a parse error, a WebSocket
the app refused) comes from here, so all of them carry the same things: the request id, no
`Server` header naming the software, and `no-store` + `Vary: Cookie`, since whether the gateway
answers itself can depend on the cookie and no cache may reuse such an answer.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote

from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy

from gateway import pages
from gateway.aiohttp_internals import OmitsDefaultHeaders
from gateway.forwarded import header_tokens

NO_STORE = ("Cache-Control", "no-store")
VARY_COOKIE = ("Vary", "Cookie")
# nginx's code for a client that went away before its answer was sent; only ever logged.
CLIENT_CLOSED_REQUEST = 499


class OwnResponse(OmitsDefaultHeaders, web.Response):
    """An answer the gateway writes itself: no Server header naming the software and version."""

    OMITTED = ("Server",)


def _wants_json(headers: CIMultiDictProxy[str]) -> bool:
    return pages.wants_json(headers.get("Accept"), headers.get("X-Requested-With"))


def _own(
    status: int,
    request_id: str,
    body: tuple[bytes, str] | None = None,
    extra: tuple[tuple[str, str], ...] = (),
) -> OwnResponse:
    response = OwnResponse(status=status, body=None if body is None else body[0])
    headers = response.headers
    if body is not None:
        headers["Content-Type"] = body[1]
    headers.extend((NO_STORE, VARY_COOKIE, ("X-Request-ID", request_id), *extra))
    return response


def error_response(
    headers: CIMultiDictProxy[str],
    status: int,
    reason: str,
    request_id: str,
    extra_headers: tuple[tuple[str, str], ...] = (),
    *,
    close: bool = False,
) -> OwnResponse:
    """An HTML page for a browser, JSON for everything else; `close` ends the connection."""
    title, advice = pages.STATUS_TEXT.get(status, ("Error", "Try again later."))
    sentence = reason[:1].upper() + reason[1:]
    body = pages.error_body(
        status, title, f"{sentence}. {advice}", request_id, json_body=_wants_json(headers)
    )
    response = _own(status, request_id, body, extra_headers)
    if close:
        response.force_close()
    return response


@dataclass(frozen=True, slots=True)
class SignIn:
    """Where people are sent to sign in: login_url as path and query."""

    path: str
    query: str
    cookie: str

    def location(self, path: str, query: str | None) -> str:
        """login_url with `next` = the page asked for, percent-encoded as one value."""
        target = path + (f"?{query}" if query else "")
        separator = "&" if self.query else ""
        return f"{self.path}?{self.query}{separator}next={quote(target, safe='')}"


def sign_in_response(
    headers: CIMultiDictProxy[str],
    sign_in: SignIn,
    page: tuple[str, str | None],
    request_id: str,
    set_cookies: tuple[str, ...],
    *,
    websocket: bool,
) -> OwnResponse:
    """302 to sign in for a page navigation; 401 JSON for a script and for every WebSocket
    handshake, which cannot follow a redirect."""
    if websocket or _wants_json(headers):
        title, advice = pages.STATUS_TEXT[401]
        body = pages.error_body(401, title, advice, request_id, json_body=True)
        challenge = ("WWW-Authenticate", f'Cookie realm="{sign_in.cookie}"')
        response = _own(401, request_id, body, (challenge,))
    else:
        response = _own(302, request_id, extra=(("Location", sign_in.location(*page)),))
    for cookie in set_cookies:
        response.headers.add("Set-Cookie", cookie)
    return response


def own_answer(status: int, headers: dict[str, str], body: bytes) -> OwnResponse:
    """An answer the gateway serves itself as it is (the JWKS)."""
    return OwnResponse(status=status, headers=headers, body=body)


def _raw_request_timeout() -> bytes:
    body = b"The request headers were not sent in time.\n"
    head = (
        "HTTP/1.1 408 Request Timeout\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Cache-Control: no-store\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode() + body


# Written straight to the connection when a request's headers never complete: there is no
# request to answer through aiohttp, nor an Accept header to choose HTML or JSON by.
REQUEST_TIMEOUT_ANSWER = _raw_request_timeout()


def client_gone() -> OwnResponse:
    """What is logged for a client that went away mid-answer: nothing can be sent to it."""
    response = OwnResponse(status=CLIENT_CLOSED_REQUEST)
    response.force_close()
    return response


@dataclass(frozen=True, slots=True)
class AnswerRules:
    """What the gateway changes on a relayed answer.

    private: the page depends on the session, so no shared cache may store it.
    set_cookies: the auth API's own Set-Cookie headers (a renewed session), added beside the
    app's, never merged into one.
    close: end the connection after this answer (aiohttp stops reading a connection after an
    upgrade it did not carry out, such as h2c; pipelined bytes must not stay unanswered).
    """

    private: bool = False
    set_cookies: tuple[str, ...] = ()
    close: bool = False

    def apply(self, headers: CIMultiDict[str]) -> None:
        if self.private:
            private_cache(headers)
        for cookie in self.set_cookies:
            headers.add("Set-Cookie", cookie)


AS_SENT = AnswerRules()


def private_cache(headers: CIMultiDict[str]) -> None:
    """A page that depends on the session must never be stored by a shared cache."""
    directives = header_tokens(headers.getall("Cache-Control", ()))
    if not directives & {"no-store", "private"}:
        kept = [
            token.strip()
            for value in headers.getall("Cache-Control", ())
            for token in value.split(",")
            if token.strip() and token.strip().lower() != "public"
        ]
        headers.popall("Cache-Control", None)
        headers["Cache-Control"] = ", ".join(["private", *kept])
    vary = header_tokens(headers.getall("Vary", ()))
    if "cookie" not in vary and "*" not in vary:
        headers.add("Vary", "Cookie")


def redirect_response(status: int, location: str, request_id: str) -> OwnResponse:
    """A redirect the gateway makes itself (the plain listener's 308 to https)."""
    return _own(status, request_id, extra=(("Location", location),))
