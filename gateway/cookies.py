"""Finding the session cookie exactly as the frontend will read it, and refusing ambiguity."""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable

from gateway.errors import BadRequest

MAX_SESSION_COOKIE_BYTES = 4096

# RFC 6265 cookie-octet: what a cookie value may contain (a DQUOTE pair around it is allowed).
_COOKIE_OCTETS = frozenset(chr(c) for c in range(0x21, 0x7F) if chr(c) not in {'"', ",", ";", "\\"})


def mentions(cookie_headers: Iterable[str], name: str) -> list[str]:
    """Every value any lenient parser could read for `name`: after `;`, `,` or white space.

    Used to refuse a second copy hidden inside another cookie's value (`a=1, session=x`), which
    some frameworks split out and read, and to redact every such value before anything is logged.
    """
    pattern = _mention_pattern(name)
    return [m.group(1) for header in cookie_headers for m in pattern.finditer(header)]


@functools.lru_cache(maxsize=8)
def _mention_pattern(name: str) -> re.Pattern[str]:
    return re.compile(rf"(?:^|[;,\s]){re.escape(name)}\s*=\s*([^;,\s]*)")


def find_session(cookie_headers: Iterable[str], name: str) -> str | None:
    """Return the value of cookie `name`, None when absent or empty.

    Raises BadRequest when the value is ambiguous (the name twice, as browsers send for cookies
    set on two paths or domains, where each framework picks a different one) or malformed (a value a
    strict parser drops and a lax one keeps), so what is validated is what the frontend reads.
    """
    headers = list(cookie_headers)
    if len(mentions(headers, name)) > 1:
        raise BadRequest("the session cookie is sent more than once")
    found: str | None = None
    seen = False
    for header in headers:
        for pair in header.split(";"):
            key, sep, value = pair.partition("=")
            if not sep or key.strip(" \t") != name:
                continue
            if seen:
                raise BadRequest("the session cookie is sent more than once")
            seen = True
            found = value.strip(" \t")
    if not found:
        return None
    if len(found) > MAX_SESSION_COOKIE_BYTES:
        raise BadRequest("the session cookie is too large")
    bare = found[1:-1] if len(found) >= 2 and found[0] == found[-1] == '"' else found
    if not bare or not _COOKIE_OCTETS.issuperset(bare):
        raise BadRequest("the session cookie is malformed")
    return found
