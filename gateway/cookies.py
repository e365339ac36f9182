"""Finding the session cookie exactly as the frontend will read it, and refusing ambiguity."""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass

MAX_SESSION_COOKIE_BYTES = 4096

# RFC 6265 cookie-octet: what a cookie value may contain (a DQUOTE pair around it is allowed).
_COOKIE_OCTETS = frozenset(chr(c) for c in range(0x21, 0x7F) if chr(c) not in {'"', ",", ";", "\\"})


@dataclass(frozen=True, slots=True)
class SessionCookie:
    """What the Cookie headers say about the session: the value, or why it cannot be used.

    `mentions` is every value any lenient parser could read for the name (after `;`, `,` or white
    space), so each can be redacted from the logs before anything refuses the request; more than
    one refuses it, since some frameworks split a copy hidden inside another cookie's value
    (`a=1, session=x`) out and read it.
    """

    value: str | None
    mentions: tuple[str, ...]
    problem: str | None = None


NO_COOKIE = SessionCookie(None, ())


@functools.lru_cache(maxsize=8)
def _mention_pattern(name: str) -> re.Pattern[str]:
    return re.compile(rf"(?:^|[;,\s]){re.escape(name)}\s*=\s*([^;,\s]*)")


def scan_cookies(cookie_headers: Sequence[str], name: str) -> SessionCookie:
    """The session cookie `name` exactly as the frontend will read it: None when absent or empty.

    A problem is set when the value is ambiguous (the name twice, as browsers send for cookies set
    on two paths or domains, where each framework picks a different one) or malformed (a value a
    strict parser drops and a lax one keeps), so what is validated is what the frontend reads.
    """
    if not cookie_headers:
        return NO_COOKIE
    pattern = _mention_pattern(name)
    mentions = tuple(m.group(1) for header in cookie_headers for m in pattern.finditer(header))
    if len(mentions) > 1:
        return SessionCookie(None, mentions, "the session cookie is sent more than once")
    found: str | None = None
    seen = False
    for header in cookie_headers:
        for pair in header.split(";"):
            key, sep, value = pair.partition("=")
            if not sep or key.strip(" \t") != name:
                continue
            if seen:
                return SessionCookie(None, mentions, "the session cookie is sent more than once")
            seen = True
            found = value.strip(" \t")
    if not found:
        return SessionCookie(None, mentions)
    if len(found) > MAX_SESSION_COOKIE_BYTES:
        return SessionCookie(None, mentions, "the session cookie is too large")
    bare = found[1:-1] if len(found) >= 2 and found[0] == found[-1] == '"' else found
    if not bare or not _COOKIE_OCTETS.issuperset(bare):
        return SessionCookie(None, mentions, "the session cookie is malformed")
    return SessionCookie(found, mentions)
