"""Finding the session cookie as the frontend will read it."""

from __future__ import annotations

import pytest

from gateway.cookies import MAX_SESSION_COOKIE_BYTES, find_session
from gateway.errors import BadRequest


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
    assert find_session(headers, "session") == expected


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
    """A duplicated, malformed or oversized session cookie is a 400, never a guess."""
    with pytest.raises(BadRequest):
        find_session(headers, "session")
