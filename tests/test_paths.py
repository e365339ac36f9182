"""Unit tables for request-target splitting, path normalization and prefix lookup."""

import pytest

from gateway.paths import PathError, PrefixTable, match_key, normalize_path, split_target

NORMALIZED = [
    # Already normal: returned unchanged.
    ("/", "/"),
    ("/dashboard", "/dashboard"),
    ("/dashboard/", "/dashboard/"),
    ("/DashBoard/", "/DashBoard/"),
    ("/a/b/c", "/a/b/c"),
    ("/static/app.min.js", "/static/app.min.js"),
    ("/.well-known/openid", "/.well-known/openid"),
    ("/a/.hidden", "/a/.hidden"),
    ("/a/..b", "/a/..b"),
    ("/~user/x-y_z", "/~user/x-y_z"),
    ("/a:b@c!$&'()*+,=", "/a:b@c!$&'()*+,="),
    ("/caf%C3%A9", "/caf%C3%A9"),
    ("/caf%c3%a9", "/caf%c3%a9"),
    ("/a%20b", "/a%20b"),
    ("/q%3Fx", "/q%3Fx"),
    ("/h%23x", "/h%23x"),
    ("/p%25", "/p%25"),
    ("/p%25zz", "/p%25zz"),
    ("/p%25%41", "/p%25A"),
    # Duplicate slashes.
    ("//dashboard", "/dashboard"),
    ("///dashboard//x///", "/dashboard/x/"),
    ("//", "/"),
    # Dot segments (RFC 3986 5.2.4), including above the root.
    ("/x/../dashboard", "/dashboard"),
    ("/./dashboard", "/dashboard"),
    ("/a/./b", "/a/b"),
    ("/a/b/..", "/a/"),
    ("/a/b/.", "/a/b/"),
    ("/a/b/../", "/a/"),
    ("/a/..", "/"),
    ("/..", "/"),
    ("/.", "/"),
    ("/../../dashboard", "/dashboard"),
    ("/a/b/../../../c", "/c"),
    # Unreserved escapes decoded, either hex case.
    ("/%2e%2e/dashboard", "/dashboard"),
    ("/%2E%2E/dashboard", "/dashboard"),
    ("/.%2e/dashboard", "/dashboard"),
    ("/x/%2e/y", "/x/y"),
    ("/%64ashboard", "/dashboard"),
    ("/%44ash%42oard", "/DashBoard"),
    ("/%41%7a%30%2D%5F%7E", "/Az0-_~"),
    ("/caf%C3%A9/%41", "/caf%C3%A9/A"),
    # ';' parameters dropped per segment.
    ("/dashboard;x", "/dashboard"),
    ("/dashboard;jsessionid=1/x", "/dashboard/x"),
    ("/public/..;/dashboard", "/dashboard"),
    ("/public/%2e%2e;/dashboard", "/dashboard"),
    ("/public/.;/dashboard", "/public/dashboard"),
    ("/;x/dashboard", "/dashboard"),
    ("/a;b;c", "/a"),
    # Trailing dots and encoded spaces stripped per segment.
    ("/dashboard.", "/dashboard"),
    ("/dashboard..", "/dashboard"),
    ("/a.../b", "/a/b"),
    ("/dashboard%2e", "/dashboard"),
    ("/dashboard%20", "/dashboard"),
    ("/dashboard.%20.", "/dashboard"),
    ("/dashboard.;x", "/dashboard"),
    ("/.../dashboard", "/dashboard"),
    ("/a/...", "/a/"),
    ("/a/%20/b", "/a/b"),
    ("/a%20b%20", "/a%20b"),
    ("/..%20/dashboard", "/dashboard"),
]


@pytest.mark.parametrize(("raw", "expected"), NORMALIZED)
def test_normalize_path(raw: str, expected: str) -> None:
    """normalize_path maps each raw path to its one normal form."""
    assert normalize_path(raw) == expected


@pytest.mark.parametrize("normal", sorted({expected for _, expected in NORMALIZED}))
def test_normal_paths_are_fixed_points(normal: str) -> None:
    """Normalizing an already normalized path returns it unchanged."""
    assert normalize_path(normal) == normal


REJECTED = [
    ("/%E2%84%AAiosk", "case-folds to ASCII"),
    ("/dashboard/%C5%BFettings", "case-folds to ASCII"),
    ("", "does not start with '/'"),
    ("dashboard", "does not start with '/'"),
    ("*", "does not start with '/'"),
    ("http://h/x", "does not start with '/'"),
    ("/a\x00b", "control character"),
    ("/a\tb", "control character"),
    ("/a\nb", "control character"),
    ("/a\x1fb", "control character"),
    ("/a\x7fb", "control character"),
    ("/a b", "whitespace"),
    ("/café", "non-ASCII"),
    ("/a\u2215b", "non-ASCII"),
    ("/a\\b", "backslash"),
    ("/a#b", "fragment"),
    ("/#", "fragment"),
    ("/dashboard?x", "query delimiter"),
    ("/a%zz", "invalid percent-encoding"),
    ("/a%", "invalid percent-encoding"),
    ("/a%2", "invalid percent-encoding"),
    ("/a%2g", "invalid percent-encoding"),
    ("/a%%41", "invalid percent-encoding"),
    ("/dashboard%2fx", "encoded slash"),
    ("/dashboard%2Fx", "encoded slash"),
    ("/a%5cb", "encoded backslash"),
    ("/a%5Cb", "encoded backslash"),
    ("/a%00", "encoded control character"),
    ("/a%01", "encoded control character"),
    ("/a%0a", "encoded control character"),
    ("/a%1F", "encoded control character"),
    ("/a%7f", "encoded control character"),
    ("/public/..%3b/dashboard", "encoded semicolon"),
    ("/a%3Bb", "encoded semicolon"),
    ("/a%252e", "double percent-encoding"),
    ("/a%252F", "double percent-encoding"),
    ("/a%2541", "double percent-encoding"),
    ("/a%25%32%46", "double percent-encoding"),
    ("/a%25%36%31", "double percent-encoding"),
    ("/a%25%25%32%46", "double percent-encoding"),
]


@pytest.mark.parametrize(("raw", "reason"), REJECTED)
def test_normalize_path_rejects(raw: str, reason: str) -> None:
    """Ambiguous or malformed paths raise PathError with a reason naming the problem."""
    with pytest.raises(PathError, match=reason):
        normalize_path(raw)


def test_path_error_is_a_value_error() -> None:
    """PathError is a ValueError, so a config check catching ValueError catches it too."""
    assert issubclass(PathError, ValueError)


@pytest.mark.parametrize(
    ("normalized", "key"),
    [
        ("/", "/"),
        ("/DashBoard/", "/dashboard/"),
        ("/caf%C3%A9", "/caf%c3%a9"),
        ("/caf%c3%a9", "/caf%c3%a9"),
        ("/A%20B", "/a%20b"),
    ],
)
def test_match_key(normalized: str, key: str) -> None:
    """match_key lowercases letters and hex escapes alike."""
    assert match_key(normalized) == key


SPLIT = [
    # Origin form.
    ("/", ("/", "")),
    ("/dashboard", ("/dashboard", "")),
    ("/dashboard?", ("/dashboard", "")),
    ("/dashboard?a=1&b=2", ("/dashboard", "a=1&b=2")),
    ("/a?b?c", ("/a", "b?c")),
    ("/?q", ("/", "q")),
    ("//evil.example/x", ("//evil.example/x", "")),
    ("/a/../b?x=/..", ("/a/../b", "x=/..")),
    # Absolute form: the authority is dropped.
    ("http://host/x", ("/x", "")),
    ("http://host:8080/x?y=1", ("/x", "y=1")),
    ("https://host/a/b?c", ("/a/b", "c")),
    ("HTTP://host/x", ("/x", "")),
    ("HtTpS://host/x", ("/x", "")),
    ("http://host", ("/", "")),
    ("http://host:80", ("/", "")),
    ("http://host?q=1", ("/", "q=1")),
    ("https://user:pw@host/x", ("/x", "")),
    ("http://host//dashboard", ("//dashboard", "")),
    ("http:///x", ("/x", "")),
    ("http://", ("/", "")),
]


@pytest.mark.parametrize(("target", "expected"), SPLIT)
def test_split_target(target: str, expected: tuple[str, str]) -> None:
    """split_target separates path and query and drops any absolute-form authority."""
    assert split_target(target) == expected


@pytest.mark.parametrize(
    ("target", "reason"),
    [
        ("*", "asterisk"),
        ("", "does not start with '/'"),
        ("dashboard", "does not start with '/'"),
        ("?x", "does not start with '/'"),
        ("ftp://host/x", "does not start with '/'"),
        ("http:/x", "does not start with '/'"),
        ("host:80", "does not start with '/'"),
        ("/a#b", "fragment"),
        ("/a?b#c", "fragment"),
        ("#", "fragment"),
        ("http://host/x#y", "fragment"),
        ("http://host#/dashboard", "fragment"),
    ],
)
def test_split_target_rejects(target: str, reason: str) -> None:
    """Asterisk-form, fragments and targets that are not a path raise PathError."""
    with pytest.raises(PathError, match=reason):
        split_target(target)


RULES = [
    ("/dashboard", "protect"),
    ("/dashboard/public/", "public"),
    ("/public", "public"),
    ("/API/V1", "api"),
    ("/", "open"),
]

LOOKUPS = [
    # Segment boundaries.
    ("/dashboard", "protect"),
    ("/dashboard/", "protect"),
    ("/dashboard/x/y", "protect"),
    ("/dashboards", "open"),
    ("/dashboard-x", "open"),
    ("/dashboard.x", "open"),
    ("/dashboard%20x", "open"),
    ("/dash", "open"),
    # Longest prefix wins; the configured trailing slash is ignored.
    ("/dashboard/public", "public"),
    ("/dashboard/public/", "public"),
    ("/dashboard/public/x", "public"),
    ("/dashboard/publicity", "protect"),
    # Case-insensitive on both sides.
    ("/DashBoard", "protect"),
    ("/DASHBOARD/PUBLIC/X", "public"),
    ("/api/v1/users", "api"),
    ("/Api/V1", "api"),
    ("/api/v2", "open"),
    ("/api", "open"),
    # The root matches everything else.
    ("/", "open"),
    ("/public", "public"),
    ("/x/dashboard", "open"),
]


@pytest.mark.parametrize(("path", "expected"), LOOKUPS)
def test_prefix_table_lookup(path: str, expected: str) -> None:
    """lookup returns the value of the longest prefix matching on a segment boundary."""
    assert PrefixTable(RULES).lookup(path) == expected


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/dashboard/x", ("/dashboard", "protect")),
        ("/DASHBOARD/PUBLIC/x", ("/dashboard/public", "public")),
        ("/api/v1/x", ("/API/V1", "api")),
        ("/other", ("/", "open")),
        ("/", ("/", "open")),
    ],
)
def test_prefix_table_lookup_prefix(path: str, expected: tuple[str, str]) -> None:
    """lookup_prefix returns the normalized prefix in its configured case with the value."""
    assert PrefixTable(RULES).lookup_prefix(path) == expected


@pytest.mark.parametrize(
    ("entries", "path", "expected"),
    [
        ([("/dashboard", 1)], "/", None),
        ([("/dashboard", 1)], "/other/dashboard", None),
        ([("/dashboard", 1)], "/dashboard/x", 1),
        ([], "/dashboard", None),
        ([("/", 1)], "/anything/at/all", 1),
        ([("//", 1)], "/x", 1),
        ([("/a/../b/", 1)], "/b/c", 1),
        ([("/%64ashboard", 1)], "/dashboard", 1),
        ([("/dashboard.", 1)], "/dashboard", 1),
        ([("/a/b/c", 3), ("/a", 1)], "/a/b", 1),
        ([("/a/b/c", 3), ("/a", 1)], "/a/b/c/d", 3),
        ([("/caf%C3%A9", 1)], "/caf%c3%a9/x", 1),
    ],
)
def test_prefix_table_prefix_normalization(
    entries: list[tuple[str, int]], path: str, expected: int | None
) -> None:
    """Configured prefixes are normalized before matching, and a miss gives None."""
    assert PrefixTable(entries).lookup(path) == expected


@pytest.mark.parametrize(
    ("entries", "path", "expected"),
    [
        ([("/dashboard/", 1)], "/dashboard/x", ("/dashboard", 1)),
        ([("/DashBoard", 1)], "/dashboard", ("/DashBoard", 1)),
        ([("//", 1)], "/x", ("/", 1)),
        ([("/x/../a/./b", 1)], "/a/b", ("/a/b", 1)),
    ],
)
def test_prefix_table_reports_normalized_prefix(
    entries: list[tuple[str, int]], path: str, expected: tuple[str, int]
) -> None:
    """lookup_prefix reports the prefix normalized, without a trailing slash unless it is '/'."""
    assert PrefixTable(entries).lookup_prefix(path) == expected


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("/dashboard", "/dashboard"),
        ("/dashboard", "/dashboard/"),
        ("/dashboard", "/DashBoard"),
        ("/dashboard", "//dashboard"),
        ("/dashboard", "/%64ashboard"),
        ("/dashboard", "/x/../dashboard"),
        ("/caf%C3%A9", "/caf%c3%a9"),
        ("/", "//"),
        ("/", "/."),
    ],
)
def test_prefix_table_rejects_duplicates(first: str, second: str) -> None:
    """Two prefixes that normalize to the same key are a configuration error naming the prefix."""
    with pytest.raises(ValueError, match="duplicate prefix") as info:
        PrefixTable([(first, 1), (second, 2)])
    assert repr(second) in str(info.value)
    assert not isinstance(info.value, PathError)


@pytest.mark.parametrize(
    "prefix", ["dashboard", "", "/a%2fb", "/a\\b", "/a b", "/a%zz", "/a#b", "/a%00"]
)
def test_prefix_table_rejects_unnormalizable_prefix(prefix: str) -> None:
    """A prefix that cannot be normalized raises PathError naming it."""
    with pytest.raises(PathError) as info:
        PrefixTable([(prefix, 1)])
    assert repr(prefix) in str(info.value)
