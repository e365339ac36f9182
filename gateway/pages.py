"""Bodies of the answers the gateway writes itself (errors), as pure functions.

Kept free of aiohttp so they are cheap to call on hot error paths and trivially testable; the
server code decides status and headers, this module only decides what the body says.
"""

from __future__ import annotations

import html
import json

# status -> (title, default detail). The detail tells the reader what to do next, because an
# error page that only names the failure leaves a user stuck.
STATUS_TEXT: dict[int, tuple[str, str]] = {
    400: (
        "Bad request",
        "The request could not be understood; check the address and try again.",
    ),
    401: (
        "Sign-in required",
        "You need to sign in to see this page.",
    ),
    403: (
        "Not allowed",
        "Your account is not allowed to see this page; ask an administrator if you need access.",
    ),
    404: (
        "Not found",
        "There is nothing at this address; check it for typos.",
    ),
    408: (
        "Request timed out",
        "The request was not sent in time; check your connection and try again.",
    ),
    413: (
        "Request too large",
        "The request body is larger than this site accepts.",
    ),
    414: (
        "Address too long",
        "The address of this request is too long; shorten it and try again.",
    ),
    429: (
        "Too many requests",
        "You have sent too many requests in a short time; wait a moment and try again.",
    ),
    431: (
        "Request headers too large",
        "The request carried too much header data, often oversized cookies; clear this "
        "site's cookies and try again.",
    ),
    502: (
        "Application unreachable",
        "The application behind this gateway did not answer; try again in a moment.",
    ),
    503: (
        "Sign-in service unavailable",
        "The sign-in service could not be reached, so your session cannot be checked; try "
        "again in a moment.",
    ),
    504: (
        "Application timed out",
        "The application behind this gateway took too long to answer; try again in a moment.",
    ),
}

HTML_CONTENT_TYPE = "text/html; charset=utf-8"
JSON_CONTENT_TYPE = "application/json"

_XHR = "xmlhttprequest"
_HTML = "text/html"

_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="robots" content="noindex">
<title>{status} {title}</title>
<style>
  :root {{ color-scheme: light dark; }}
  body {{ margin: 0; min-height: 100vh; display: grid; place-items: center;
         font: 16px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
         background: #f4f5f7; color: #1f2328; }}
  main {{ max-width: 32rem; margin: 1.5rem; padding: 2rem 2.25rem; background: #fff;
         border-radius: 12px; box-shadow: 0 1px 3px rgb(0 0 0 / 12%); }}
  .status {{ margin: 0; font-size: .85rem; font-weight: 600; letter-spacing: .06em;
            text-transform: uppercase; color: #8c959f; }}
  h1 {{ margin: .25rem 0 .75rem; font-size: 1.5rem; }}
  p {{ margin: 0 0 1rem; }}
  .rid {{ margin: 1.5rem 0 0; font-size: .85rem; color: #57606a; }}
  code {{ font: .85rem ui-monospace, SFMono-Regular, Menlo, monospace; padding: .1rem .35rem;
         background: #eaeef2; border-radius: 4px; word-break: break-all; }}
  @media (prefers-color-scheme: dark) {{
    body {{ background: #0d1117; color: #e6edf3; }}
    main {{ background: #161b22; box-shadow: none; border: 1px solid #30363d; }}
    .rid {{ color: #8d96a0; }}
    code {{ background: #21262d; }}
  }}
</style>
</head>
<body>
<main>
<p class="status">Error {status}</p>
<h1>{title}</h1>
<p>{detail}</p>
<p class="rid">If this keeps happening, quote request id <code>{request_id}</code>.</p>
</main>
</body>
</html>
"""


def wants_json(accept: str | None, requested_with: str | None) -> bool:
    """Whether a caller is a script (fetch/XHR) that should get JSON rather than an HTML page.

    Browsers always list text/html when navigating, so its absence from a present Accept header
    marks a programmatic client; a missing or blank Accept is treated as a browser so humans never
    get raw JSON by accident.
    """
    if requested_with is not None and requested_with.strip().lower() == _XHR:
        return True
    if accept is None or not accept.strip():
        return False
    return not _accepts_html(accept)


def _accepts_html(accept: str) -> bool:
    for media_range in accept.split(","):
        media_type, *params = media_range.split(";")
        if media_type.strip().lower() != _HTML:
            continue
        # "text/html;q=0" is an explicit refusal, not a request for HTML.
        if not any(_is_zero_quality(param) for param in params):
            return True
    return False


def _is_zero_quality(param: str) -> bool:
    name, _, value = param.partition("=")
    if name.strip().lower() != "q":
        return False
    try:
        return float(value.strip()) == 0.0
    except ValueError:
        return False


def error_body(
    status: int, title: str, detail: str, request_id: str, *, json_body: bool
) -> tuple[bytes, str]:
    """Render an error answer as (body, content_type), JSON for scripts or an HTML page."""
    if json_body:
        payload = {"status": status, "error": title, "detail": detail, "request_id": request_id}
        return json.dumps(payload).encode(), JSON_CONTENT_TYPE
    page = _PAGE.format(
        status=status,
        title=html.escape(title),
        detail=html.escape(detail),
        request_id=html.escape(request_id),
    )
    return page.encode(), HTML_CONTENT_TYPE
