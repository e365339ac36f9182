"""Request-target splitting, path normalization and the prefix-rule table.

The gateway decides protect/public on the normalized path and forwards that same normalized
path, so the frontend can only ever see a path the gateway has already judged. Normalization
therefore rejects every construct that permissive frameworks decode or reinterpret differently
(encoded slashes, double encoding, encoded ';' ...), and folds away the ones that are
unambiguous (dot segments, duplicate slashes, ';' parameters, trailing dots and spaces), so that
whatever a lenient frontend later does to the forwarded path, it lands on the same rule.
"""

import re
import string
from collections.abc import Iterable
from typing import Generic, TypeVar
from urllib.parse import unquote

__all__ = ["PathError", "PrefixTable", "match_key", "normalize_path", "split_target"]

T = TypeVar("T")


class PathError(ValueError):
    """A request target that cannot be normalized without ambiguity; the gateway answers 400 with
    str(exc) as the reason."""


_UNRESERVED = frozenset(string.ascii_letters + string.digits + "-._~")

# Raw characters that no well-behaved client sends unescaped; non-ASCII is checked separately
# with str.isascii, which is much cheaper than a character class over the whole range. A raw
# '?' cannot come out of split_target, and would turn into a query when the path is forwarded.
_RAW_REJECT = re.compile(r"[\x00-\x20\x7f\\#?]")

# The authority of an absolute-form target runs up to the first '/' or '?' (RFC 3986 3.2).
_AUTHORITY_END = re.compile(r"[/?]")

_ESCAPE = re.compile(r"%([0-9A-Fa-f]{2})?")

# A surviving '%25' in front of two hex digits decodes to a fresh escape on a second pass, which
# double-decoding frameworks make. Checked after unreserved escapes are decoded, so that
# '%25%32%46' (which becomes '%252F') is caught as well as a literal '%252F'.
_DOUBLE_ENCODING = re.compile(r"%25[0-9A-Fa-f]{2}")

# Everything the rewrite below changes: escapes, ';' parameters, empty segments, and a segment
# ending in '.' (trailing dots, and the dot segments '.' and '..'). Paths without them, which is
# nearly all real traffic including 'app.min.js', are already normal and skip the rewrite.
_NEEDS_REWRITE = re.compile(r"[%;]|//|\.(?:/|\Z)")

# Windows-style servers drop trailing dots and spaces from a segment, so 'dashboard. ' is served
# as 'dashboard'; after decoding, a trailing space can only appear as '%20'.
_TRAILING_JUNK = re.compile(r"(?:\.|%20)+\Z")


def _forbidden_escape_reasons() -> dict[int, str]:
    reasons = {byte: "encoded control character in path" for byte in range(0x20)}
    reasons[0x7F] = "encoded control character in path"
    reasons[0x2F] = "encoded slash in path"
    reasons[0x5C] = "encoded backslash in path"
    reasons[0x3B] = "encoded semicolon in path"
    return reasons


_FORBIDDEN_ESCAPES = _forbidden_escape_reasons()


def _raw_reject_reason(char: str) -> str:
    if char == "\\":
        return "backslash in path"
    if char == "#":
        return "fragment in path"
    if char == " ":
        return "whitespace in path"
    if char == "?":
        return "query delimiter in path"
    return "control character in path"


def _decode_escape(match: re.Match[str]) -> str:
    hex_digits = match.group(1)
    if hex_digits is None:
        raise PathError("invalid percent-encoding in path")
    byte = int(hex_digits, 16)
    char = chr(byte)
    if char in _UNRESERVED:
        return char
    reason = _FORBIDDEN_ESCAPES.get(byte)
    if reason is not None:
        raise PathError(reason)
    return match.group(0)


def split_target(raw_target: str) -> tuple[str, str]:
    """Split a raw HTTP request target into (raw_path, raw_query).

    raw_query excludes the '?' and is '' when absent. Absolute-form targets ('http://host/x?y',
    'https://...', scheme case-insensitive) give the path part only ('/' when the authority has
    no path); the host is discarded because routing must never depend on a client-chosen host
    hidden in the request line. A '#', '*', or a target that does not start with '/' (after
    absolute-form stripping) raises PathError.
    """
    if "#" in raw_target:
        raise PathError("fragment in request target")
    if raw_target == "*":
        raise PathError("asterisk-form request target not supported")
    if raw_target[:8].lower().startswith(("http://", "https://")):
        after_scheme = raw_target.partition("://")[2]
        authority_end = _AUTHORITY_END.search(after_scheme)
        rest = "" if authority_end is None else after_scheme[authority_end.start() :]
        target = "/" + rest.removeprefix("/")
    else:
        target = raw_target
    if not target.startswith("/"):
        raise PathError("request target does not start with '/'")
    path, _, query = target.partition("?")
    return path, query


def normalize_path(raw_path: str) -> str:
    """Return the normalized path (percent-encoded string, letter case as the client sent it) or
    raise PathError.

    Rejects control characters, non-ASCII, whitespace, '\\', '#', '?', invalid or ambiguous escapes
    (encoded '/', '\\', ';', control characters, double encoding); decodes escapes of unreserved
    characters; drops ';' parameters and trailing dots/spaces per segment; removes dot segments
    and empty segments, keeping a trailing slash the way RFC 3986 does.
    """
    if not raw_path.startswith("/"):
        raise PathError("path does not start with '/'")
    if not raw_path.isascii():
        raise PathError("non-ASCII character in path")
    bad = _RAW_REJECT.search(raw_path)
    if bad is not None:
        raise PathError(_raw_reject_reason(bad.group()))
    if _NEEDS_REWRITE.search(raw_path) is None:
        return raw_path

    decoded = _ESCAPE.sub(_decode_escape, raw_path) if "%" in raw_path else raw_path
    if _DOUBLE_ENCODING.search(decoded) is not None:
        raise PathError("double percent-encoding in path")
    if "%" in decoded and _folds_to_ascii(decoded):
        raise PathError("encoded character that case-folds to ASCII in path")

    segments = decoded[1:].split("/")
    last = len(segments) - 1
    kept: list[str] = []
    for index, segment in enumerate(segments):
        segment = segment.partition(";")[0]
        if segment not in (".", ".."):
            segment = _TRAILING_JUNK.sub("", segment)
        if segment == "..":
            if kept:
                kept.pop()
        elif segment and segment != ".":
            kept.append(segment)
            continue
        # A final '.', '..' or empty segment names a directory, so the result keeps its slash.
        if index == last:
            kept.append("")
    return "/" + "/".join(kept)


def _folds_to_ascii(decoded: str) -> bool:
    """True when a percent-encoded UTF-8 character lower- or case-folds to an ASCII letter (the
    Kelvin sign folds to 'k', the long s to 's'): a Unicode-lowercasing frontend would read a
    route the gateway's ASCII comparison does not."""
    text = unquote(decoded, errors="replace")
    return any(
        not char.isascii() and any(f.isascii() for f in char.lower() + char.casefold())
        for char in text
    )


def match_key(normalized_path: str) -> str:
    """The form used for comparison against rule prefixes: the ASCII-lowercased normalized path
    (hex escapes lowercased too, so '%C3' and '%c3' compare equal)."""
    return normalized_path.lower()


class PrefixTable(Generic[T]):
    """Longest-prefix-wins lookup on segment boundaries over normalized, case-insensitive paths.

    '/dashboard' matches '/dashboard', '/dashboard/' and '/dashboard/x', never '/dashboards';
    a configured trailing slash is ignored; '/' matches every path.
    """

    __slots__ = ("_entries", "_root")

    def __init__(self, entries: Iterable[tuple[str, T]]) -> None:
        self._entries: dict[str, tuple[str, T]] = {}
        self._root: tuple[str, T] | None = None
        for prefix, value in entries:
            try:
                normalized = normalize_path(prefix)
            except PathError as exc:
                raise PathError(f"prefix {prefix!r} cannot be normalized: {exc}") from None
            if normalized != "/":
                normalized = normalized.removesuffix("/")
            key = match_key(normalized)
            existing = self._root if key == "/" else self._entries.get(key)
            if existing is not None:
                raise ValueError(
                    f"duplicate prefix {prefix!r}: same as {existing[0]!r} after normalization"
                )
            if key == "/":
                self._root = (normalized, value)
            else:
                self._entries[key] = (normalized, value)

    def lookup(self, normalized_path: str) -> T | None:
        """Value of the longest prefix matching normalized_path, or None."""
        entry = self.lookup_prefix(normalized_path)
        return None if entry is None else entry[1]

    def lookup_prefix(self, normalized_path: str) -> tuple[str, T] | None:
        """(normalized prefix in its configured case, value) of the longest matching prefix, or
        None. The prefix never ends in '/' unless it is the root '/' itself, so for any other
        prefix, removing it from the path leaves '' or a remainder starting with '/'."""
        candidate = match_key(normalized_path).removesuffix("/")
        # Cutting at each '/' from the right visits exactly the segment-boundary prefixes,
        # longest first, so the first hit is the longest match.
        while candidate:
            entry = self._entries.get(candidate)
            if entry is not None:
                return entry
            candidate = candidate[: candidate.rfind("/")]
        return self._root
