"""Header policy: what reaches the frontend, and who the client is."""

from __future__ import annotations

import ipaddress

import pytest
from multidict import CIMultiDict, CIMultiDictProxy

from gateway.forwarded import HeaderPolicy, request_id_from

IDENTITY = ["X-Auth-User-Id", "X-Auth-User-Email"]


def policy(*trusted: str) -> HeaderPolicy:
    return HeaderPolicy([ipaddress.ip_network(t) for t in trusted], IDENTITY, "http")


def headers(*pairs: tuple[str, str]) -> CIMultiDictProxy[str]:
    return CIMultiDictProxy(CIMultiDict(pairs))


def upstream(p: HeaderPolicy, peer: str, *pairs: tuple[str, str]) -> list[tuple[str, str]]:
    incoming = headers(("Host", "app.test"), *pairs)
    return p.upstream_headers(incoming, p.forwarding(peer, incoming), "rid")


@pytest.mark.parametrize(
    "name",
    [
        "X-Auth-User-Id",
        "x-auth-user-id",
        "X_Auth_User_Id",
        "x_AUTH-user_email",
        "X-Original-URL",
        "X-Rewrite-URL",
        "Connection",
        "Keep-Alive",
        "Proxy-Connection",
        "Proxy-Authorization",
        "Proxy-Authenticate",
        "TE",
        "Transfer-Encoding",
        "Upgrade",
        "Trailer",
        "Forwarded",
        "X-Real-IP",
        "X-Forwarded-Uri",
        "X-Forwarded-Port",
        "X_Forwarded_For",
        "Expect",
    ],
)
def test_client_copies_of_managed_headers_never_pass(name: str) -> None:
    """Identity, URL-override, hop-by-hop and forwarding headers from the client are dropped."""
    out = upstream(policy(), "203.0.113.9", (name, "forged"))
    assert all(value != "forged" for _, value in out)


def test_headers_named_in_connection_are_dropped_but_gateway_headers_stay() -> None:
    """Connection can drop the client's own headers, never the ones the gateway sets."""
    out = dict(
        upstream(
            policy(),
            "203.0.113.9",
            ("Connection", "X-Forwarded-For, X-Custom, X-Request-ID"),
            ("X-Custom", "1"),
        )
    )
    assert "X-Custom" not in out
    assert out["X-Forwarded-For"] == "203.0.113.9"
    assert out["X-Request-ID"] == "rid"


def test_untrusted_forwarding_headers_are_replaced() -> None:
    """From an untrusted peer, XFF is replaced and proto/host are the gateway's own view."""
    out = dict(
        upstream(
            policy(),
            "203.0.113.9",
            ("X-Forwarded-For", "1.1.1.1"),
            ("X-Forwarded-Proto", "https"),
            ("X-Forwarded-Host", "evil.test"),
        )
    )
    assert out["X-Forwarded-For"] == "203.0.113.9"
    assert out["X-Forwarded-Proto"] == "http"
    assert out["X-Forwarded-Host"] == "app.test"


def test_trusted_proxy_chain_is_extended() -> None:
    """From a trusted peer, XFF is extended and its proto/host are kept."""
    out = dict(
        upstream(
            policy("10.0.0.0/8"),
            "10.0.0.2",
            ("X-Forwarded-For", "198.51.100.7"),
            ("X-Forwarded-Proto", "https"),
            ("Forwarded", "for=198.51.100.7"),
        )
    )
    assert out["X-Forwarded-For"] == "198.51.100.7, 10.0.0.2"
    assert out["X-Forwarded-Proto"] == "https"
    assert out["Forwarded"] == "for=198.51.100.7"


@pytest.mark.parametrize(
    ("peer", "xff", "client"),
    [
        ("203.0.113.9", "1.2.3.4", "203.0.113.9"),
        ("10.0.0.2", "1.2.3.4", "1.2.3.4"),
        ("10.0.0.2", "6.6.6.6, 1.2.3.4, 10.0.0.5", "1.2.3.4"),
        ("10.0.0.2", "garbage, 10.0.0.5", "10.0.0.5"),
        ("10.0.0.2", "", "10.0.0.2"),
        ("::ffff:10.0.0.2", "1.2.3.4", "1.2.3.4"),
    ],
    ids=["untrusted", "one-hop", "rightmost-untrusted", "garbage", "empty", "mapped-v6"],
)
def test_client_ip_is_the_first_untrusted_hop(peer: str, xff: str, client: str) -> None:
    """The client ip is the rightmost address not in trusted_proxies; forged left parts ignored."""
    p = policy("10.0.0.0/8")
    incoming = headers(("X-Forwarded-For", xff)) if xff else headers()
    assert p.forwarding(peer, incoming).client_ip == client


@pytest.mark.parametrize(
    ("value", "kept"),
    [
        ("abc-123", True),
        ("a" * 128, True),
        ("a" * 129, False),
        ("has space", False),
        ("x\x01", False),
        (None, False),
    ],
)
def test_request_id_is_kept_only_when_safe(value: str | None, kept: bool) -> None:
    """A client's X-Request-ID is echoed only when short and plain; otherwise a new one is made."""
    result = request_id_from(value)
    assert (result == value) is kept
    assert result
