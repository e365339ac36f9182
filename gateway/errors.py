"""Typed errors that know the HTTP status the gateway answers with.

Raised anywhere on the request path and turned into one answer (an HTML page or JSON) in one place.
The reason is written for the client: it never quotes a header, a cookie or an exception text.
"""

from __future__ import annotations


class GatewayError(Exception):
    """An answer the gateway gives itself instead of relaying one."""

    status = 500
    outcome: str | None = None
    # The connection cannot be trusted to carry another request after this answer.
    close_connection = False

    def __init__(self, reason: str, *, headers: tuple[tuple[str, str], ...] = ()) -> None:
        super().__init__(reason)
        self.reason = reason
        self.headers = headers


class BadRequest(GatewayError):
    """The request cannot be read without ambiguity."""

    status = 400


class BadRequestBody(BadRequest):
    """The request body broke off or was malformed while it was being relayed."""

    close_connection = True


class VersionNotSupported(GatewayError):
    """Anything but HTTP/1.0 and HTTP/1.1 (an HTTP/2.0 or HTTP/0.9 request line)."""

    status = 505
    close_connection = True


class HeadersTooLarge(GatewayError):
    """A header line, or all headers together, exceed max_header_bytes."""

    status = 431


class AuthUnavailable(GatewayError):
    """The auth API did not give a usable answer; the gateway fails closed."""

    status = 503
    outcome = "error"


class UpstreamUnreachable(GatewayError):
    """The frontend refused or dropped the connection before answering."""

    status = 502


class UpstreamTimeout(GatewayError):
    """The frontend sent no response headers within upstream_timeout."""

    status = 504


class RequestTimeout(GatewayError):
    """The request body stalled for limits.body_timeout; the connection cannot be trusted to be
    in step any more."""

    status = 408
    close_connection = True


class PayloadTooLarge(GatewayError):
    """The request body is over limits.max_body_bytes (by Content-Length, or counted as it
    streams)."""

    status = 413
    close_connection = True


class Overloaded(GatewayError):
    """The process is overloaded and this request is not a signed-in user's cached session:
    shed at once rather than queued until every client times out."""

    status = 503
    outcome = "shed"
