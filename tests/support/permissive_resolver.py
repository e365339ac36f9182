"""A model of how a permissive web framework turns a raw path into the route it serves.

Deliberately written without reference to gateway.paths and as lenient as real frameworks get
(decoding until stable, backslash as slash, ';' parameters, Windows trailing dots and spaces,
case-insensitive routes), so tests can check that the gateway never judges a path differently
from the frontend that will serve it.
"""

from collections.abc import Iterable
from urllib.parse import unquote

# ASCII whitespace only: the servers that trim segments (IIS, Java's String.trim) trim ASCII.
_TRIMMED = ". \t\n\r\f\v"


def resolve(raw_path: str) -> str:
    """The lowercased, fully decoded route a permissive framework serves for raw_path."""
    decoded = raw_path
    # Each pass that changes the string shortens it, so this terminates.
    while (again := unquote(decoded)) != decoded:
        decoded = again
    stack: list[str] = []
    for part in decoded.replace("\\", "/").split("/"):
        segment = part.split(";", 1)[0]
        if segment not in (".", ".."):
            segment = segment.rstrip(_TRIMMED)
        if segment == "..":
            if stack:
                stack.pop()
        elif segment not in ("", "."):
            stack.append(segment)
    return ("/" + "/".join(stack)).lower()


def route(resolved_path: str, prefixes: Iterable[str]) -> str | None:
    """The longest of the lowercase rule prefixes (no trailing slash, or '/') that a resolved
    path falls under on a segment boundary, or None."""
    matches = [
        prefix
        for prefix in prefixes
        if prefix == "/" or resolved_path == prefix or resolved_path.startswith(prefix + "/")
    ]
    return max(matches, key=len, default=None)
