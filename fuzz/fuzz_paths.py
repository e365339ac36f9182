"""Fuzz split_target and normalize_path: only PathError escapes, output is a stable normal form,
absolute-form hosts never leak into the path, and a permissive frontend agrees on the rule.

Run: python fuzz/fuzz_paths.py -atheris_runs=100000   or   -max_total_time=60
"""

import re
import sys
from pathlib import Path

import atheris

# Run as a script, so the repository root (for gateway and tests) is not on sys.path yet.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

# Instrumented before the test helpers import it, or the first, uninstrumented copy would stick.
with atheris.instrument_imports():
    from gateway.paths import PathError, normalize_path, split_target

from tests.test_paths_properties import assert_frontend_agrees, assert_normal_form

_TOKENS = [
    "/", "//", ".", "..", ";", ";x=1", "\\", "#", "?", "~", "-", "_", " ", "http://h", "HTTPS://",
    "dashboard", "DashBoard", "public", "PUBLIC", "%20", "%25", "%2525", "%252e", "%25%32%66",
    "%C3%A9", "%E2%84%AA",
    *(chr(code) for code in range(0x21, 0x7F)),
    *(f"%{byte:02X}" for byte in range(256)),
    *(f"%{byte:02x}" for byte in range(256)),
]  # fmt: skip
_ABSOLUTE_FORM = re.compile(r"https?://([^/?]*)(.*)", re.IGNORECASE | re.DOTALL)


def check_split(target: str) -> None:
    """split_target returns a '/'-path without '#' and never the authority of an absolute form."""
    try:
        raw_path, raw_query = split_target(target)
    except PathError:
        return
    assert raw_path.startswith("/"), (target, raw_path)
    assert "#" not in raw_path and "?" not in raw_path, (target, raw_path)
    absolute = _ABSOLUTE_FORM.fullmatch(target)
    rest = target if absolute is None else absolute.group(2)
    expected_path, mark, expected_query = rest.partition("?")
    assert raw_path == (expected_path or "/"), (target, raw_path)
    assert raw_query == (expected_query if mark else None), (target, raw_query)


def check_normalize(raw_path: str) -> None:
    """A normalized path is a fixed point in normal form on which the frontend agrees."""
    try:
        normalized = normalize_path(raw_path)
    except PathError:
        return
    assert normalize_path(normalized) == normalized, (raw_path, normalized)
    assert_normal_form(normalized)
    assert_frontend_agrees(normalized)


def test_one_input(data: bytes) -> None:
    if data[:1] == b"t":
        # Regex decisions are invisible to coverage feedback, so byte-level mutation rarely
        # assembles '%2e%2e;' or '%25%32%66'; token mode lets each byte pair pick a whole token.
        text = "".join(
            _TOKENS[int.from_bytes(data[i : i + 2], "big") % len(_TOKENS)]
            for i in range(1, len(data), 2)
        )
    else:
        # Latin-1 maps every byte to one character, so the fuzzer steers each character
        # directly, including raw non-ASCII ones.
        text = data.decode("latin-1")
    check_split(text)
    check_normalize(text)
    check_normalize("/" + text)


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
