"""The gateway's own error bodies: JSON-vs-HTML choice, escaping and shape."""

from __future__ import annotations

import json

import pytest

from gateway.pages import STATUS_TEXT, error_body, wants_json


@pytest.mark.parametrize(
    ("accept", "requested_with", "expected"),
    [
        (None, None, False),
        ("", None, False),
        ("   ", None, False),
        ("text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8", None, False),
        ("TEXT/HTML", None, False),
        ("application/json, text/html;q=0.5", None, False),
        ("application/json", None, True),
        ("*/*", None, True),
        ("application/json, text/plain, */*", None, True),
        ("text/event-stream", None, True),
        ("text/html;q=0, application/json", None, True),
        ("text/html-fragment", None, True),
        (None, "XMLHttpRequest", True),
        ("text/html", "xmlhttprequest", True),
        (None, "fetch", False),
    ],
)
def test_wants_json(accept: str | None, requested_with: str | None, expected: bool) -> None:
    """Scripts (XHR, or an Accept without text/html) get JSON; browsers and bare clients HTML."""
    assert wants_json(accept, requested_with) is expected


def test_json_body_shape() -> None:
    """The JSON error has exactly status, error, detail and request_id, as application/json."""
    body, content_type = error_body(503, "Down", "Try later.", "req-1", json_body=True)
    assert content_type == "application/json"
    assert json.loads(body) == {
        "status": 503,
        "error": "Down",
        "detail": "Try later.",
        "request_id": "req-1",
    }


def test_json_body_keeps_markup_verbatim() -> None:
    """JSON bodies carry values unescaped; HTML escaping is only for the HTML page."""
    body, _ = error_body(400, "<b>", "a & b", "<id>", json_body=True)
    assert json.loads(body)["detail"] == "a & b"
    assert json.loads(body)["request_id"] == "<id>"


def test_html_body_escapes_interpolated_values() -> None:
    """Title, detail and request id are HTML-escaped in the page."""
    body, content_type = error_body(
        401,
        "<script>t</script>",
        'Go <a href="x">here</a> & retry',
        '"><img src=x onerror=alert(1)>',
        json_body=False,
    )
    page = body.decode()
    assert content_type == "text/html; charset=utf-8"
    assert "<script>" not in page
    assert "&lt;script&gt;t&lt;/script&gt;" in page
    assert "Go &lt;a href=&quot;x&quot;&gt;here&lt;/a&gt; &amp; retry" in page
    assert "<img" not in page
    assert "&quot;&gt;&lt;img src=x onerror=alert(1)&gt;" in page


def test_html_body_is_self_contained_and_complete() -> None:
    """The page is a standalone English document with viewport, status, advice and request id."""
    title, detail = STATUS_TEXT[502]
    page = error_body(502, title, detail, "abc123", json_body=False)[0].decode()
    assert page.startswith("<!doctype html>")
    assert '<html lang="en">' in page
    assert '<meta name="viewport"' in page
    assert "502" in page
    assert title in page
    assert detail in page
    assert "abc123" in page
    for external in ("<script", "<link", "src=", "url(", "http://", "https://"):
        assert external not in page


def test_status_text_covers_gateway_statuses() -> None:
    """Every status the gateway answers itself has a title and an actionable detail."""
    assert set(STATUS_TEXT) >= {400, 401, 403, 404, 414, 429, 431, 502, 503, 504}
    for title, detail in STATUS_TEXT.values():
        assert title
        assert detail.endswith(".")
    assert STATUS_TEXT[502][1] == (
        "The application behind this gateway did not answer; try again in a moment."
    )
