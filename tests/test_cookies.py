"""Finding the session cookie as the frontend will read it."""

from __future__ import annotations

import pytest

from gateway.cookies import MAX_SESSION_COOKIE_BYTES, scan_cookies


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ([], None),
        (["theme=dark"], None),
        (["session=abc"], "abc"),
        (["theme=dark; session=abc; x=1"], "abc"),
        (["theme=dark;session=abc"], "abc"),
        (["  session=abc  "], "abc"),
        (["session="], None),
        (["session= "], None),
        (['session="abc"'], '"abc"'),
        (["Session=abc"], None),
        (["__Host-session=abc"], None),
        (["sessionx=abc; xsession=def"], None),
        (["theme=dark", "session=abc"], "abc"),
        (["junk; ;; =x; session=abc"], "abc"),
        (["session=a=b"], "a=b"),
    ],
    ids=lambda v: repr(v)[:40],
)
def test_finds_exactly_the_named_cookie(headers: list[str], expected: str | None) -> None:
    """Only the exact cookie name counts; empty is absent; look-alikes are not the session."""
    found = scan_cookies(headers, "session")
    assert (found.value, found.problem) == (expected, None)


@pytest.mark.parametrize(
    "headers",
    [
        ["session=a; session=b"],
        ["session=a", "session=b"],
        ["session=a; session=a"],
        ["session=a; session="],
        ["session=a b"],
        ["session=a\\b"],
        ["session=a,b"],
        ['session="a'],
        ["session=\x01abc"],
        ["session=" + "a" * (MAX_SESSION_COOKIE_BYTES + 1)],
    ],
    ids=[
        "twice",
        "two-headers",
        "same-twice",
        "second-empty",
        "space",
        "backslash",
        "comma",
        "half-quoted",
        "control",
        "oversized",
    ],
)
def test_ambiguous_or_malformed_session_is_refused(headers: list[str]) -> None:
    """A duplicated, malformed or oversized session cookie is refused, never a guess."""
    found = scan_cookies(headers, "session")
    assert found.value is None and found.problem is not None


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        (["a=1, session=x; b=2"], ("x",)),
        (["session=a; session=b"], ("a", "b")),
        (["theme=dark"], ()),
    ],
)
def test_every_lenient_reading_is_a_mention(headers: list[str], expected: tuple[str, ...]) -> None:
    """Each value a lenient parser could read for the name is listed, for redaction."""
    assert scan_cookies(headers, "session").mentions == expected
