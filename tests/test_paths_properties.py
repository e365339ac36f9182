"""Property tests: normalization is stable, its output is unambiguous, and a permissive frontend
serving the normalized path always lands on the rule the gateway chose."""

import re
import string

from hypothesis import example, given, settings
from hypothesis import strategies as st

from gateway.paths import PathError, PrefixTable, normalize_path, split_target
from tests.support.permissive_resolver import resolve, route

RULES = [
    ("/dashboard", "protect"),
    ("/dashboard/public", "public"),
    ("/public", "public"),
    ("/", "open"),
]
TABLE = PrefixTable(RULES)
RULE_VALUES = dict(RULES)

_TROUBLE = [
    "/", "/", "/", "/", ".", ".", "..", "%2e", "%2E", "%2f", "%5c", ";", "%3b", "%25", "%00",
    "\\", "~", "-", "%20", "//", "/dashboard", "/public", "/DashBoard", "/%64ashboard", ";x=1",
    "..;", "%2e%2e", "?", "%252e", "%252F", "%25%32%66", "%2525", "2", "f", "s",
]  # fmt: skip


def _letter(char: str) -> st.SearchStrategy[str]:
    """A letter as sent, upper-cased, or percent-encoded in either hex case; mostly as sent."""
    return st.sampled_from(
        [char, char, char, char.upper(), f"%{ord(char):02X}", f"%{ord(char.upper()):02x}"]
    )


def _spelling(word: str) -> st.SearchStrategy[str]:
    return st.tuples(*(_letter(char) for char in word)).map("".join)


_escaped_bytes = st.integers(0, 255).flatmap(
    lambda byte: st.sampled_from([f"%{byte:02X}", f"%{byte:02x}"])
)
_tokens = st.one_of(
    st.sampled_from(_TROUBLE),
    _letter("d"),
    _letter("a"),
    _letter("s"),
    _letter("p"),
    _escaped_bytes,
)
# Token soup reaches the odd corners; segment-shaped paths reach the rules often enough for the
# agreement property to say something about '/dashboard' and '/public'.
_soup = st.lists(_tokens, max_size=16).map("".join)
_segment = st.one_of(
    st.tuples(
        st.one_of(_spelling("dashboard"), _spelling("public")),
        st.one_of(
            st.sampled_from(["", "", ".", "..", "%20", ";x", ";", "%2e", ".%20.", "%2E;a=b", "s"]),
            _soup,
        ),
    ).map("".join),
    st.sampled_from([".", "..", "%2e%2e", ".%2E", "..;", "...", "", "x", "%C3%A9", "%25"]),
    _soup,
)
_separator = st.sampled_from(["/", "/", "/", "/", "//", "/./", "\\", "%2f"])
_segmented = st.lists(st.tuples(_separator, _segment), max_size=6).map(
    lambda parts: "".join(separator + segment for separator, segment in parts)
)
hostile_paths = st.one_of(_segmented, _soup).map(lambda path: "/" + path)

_UNRESERVED = frozenset(string.ascii_letters + string.digits + "-._~")

# Printable ASCII other than the characters the normalizer rejects or splits on, or an escape.
_NORMAL_FORM = re.compile(r"(?:/(?:[^\x00-\x20\x7f-\U0010ffff/\\#;?%]|%[0-9A-Fa-f]{2})*)+")
_DOUBLE_ENCODING = re.compile(r"%25[0-9A-Fa-f]{2}")


def assert_normal_form(path: str) -> None:
    """Fail unless path is in normal form: nothing normalize_path rejects or would rewrite."""
    assert _NORMAL_FORM.fullmatch(path), path
    assert _DOUBLE_ENCODING.search(path) is None, path
    for hex_digits in re.findall(r"%(..)", path):
        char = chr(int(hex_digits, 16))
        assert char not in _UNRESERVED, path
        assert char not in "/\\;" and " " <= char != "\x7f", path
    segments = path[1:].split("/")
    # Only the last segment may be empty (a trailing slash); none is a dot segment, and none
    # ends in '.' or an encoded space, which Windows-style servers would strip.
    assert all(segments[:-1]), path
    assert not any(segment.endswith((".", "%20")) for segment in segments), path


def assert_frontend_agrees(normalized: str) -> None:
    """Fail unless a permissive frontend serving normalized picks the gateway's rule."""
    served = route(resolve(normalized), RULE_VALUES)
    assert served is not None
    assert TABLE.lookup(normalized) == RULE_VALUES[served], (normalized, resolve(normalized))


@settings(max_examples=400)
@given(hostile_paths)
@example("/public/%2e%2e;/dashboard")
@example("/x%25%32%46")
def test_normalize_is_idempotent(raw: str) -> None:
    """Normalizing a normalized path changes nothing."""
    try:
        once = normalize_path(raw)
    except PathError:
        return
    assert normalize_path(once) == once


@settings(max_examples=400)
@given(hostile_paths)
@example("/a/b/..")
@example("/dashboard.%20")
def test_normal_form_is_unambiguous(raw: str) -> None:
    """The normalized path holds nothing the normalizer rejects, no '//', dot segment or ';'."""
    try:
        normalized = normalize_path(raw)
    except PathError:
        return
    assert_normal_form(normalized)


@settings(max_examples=600)
@given(hostile_paths)
@example("/public/..;/dashboard")
@example("/dashboard%20")
@example("/DashBoard./public")
def test_frontend_selects_the_gateway_rule(raw: str) -> None:
    """A permissive frontend serving the normalized path lands on the rule the gateway chose."""
    try:
        normalized = normalize_path(raw)
    except PathError:
        return
    assert_frontend_agrees(normalized)


_hosts = st.from_regex(r"[a-z0-9.\-]{0,12}(?::[0-9]{1,5})?", fullmatch=True)
_path_parts = st.sampled_from(["", "/", "/x", "//dashboard", "/a/b", "/..", "/h%41"])
_queries = st.sampled_from(["", "?", "?q=1", "?next=/x", "?a=http://h/"])
_schemes = st.sampled_from(["http", "https", "HTTP", "Https"])


@settings(max_examples=300)
@given(_schemes, _hosts, _path_parts, _queries)
def test_split_target_drops_the_authority(scheme: str, host: str, path: str, query: str) -> None:
    """An absolute-form target yields exactly its path and query, never its host."""
    raw_path, raw_query = split_target(f"{scheme}://{host}{path}{query}")
    assert raw_path == (path or "/")
    assert raw_query == (query[1:] if query else None)


@settings(max_examples=300)
@given(st.text(alphabet="/?#:.hxtps%", max_size=20))
def test_split_target_never_returns_a_fragment(target: str) -> None:
    """split_target either raises PathError or returns a path without '#' that starts with '/'."""
    try:
        raw_path, _ = split_target(target)
    except PathError:
        return
    assert "#" not in raw_path
    assert raw_path.startswith("/")
