"""Header hygiene between the client and the frontend: what is dropped, replaced and appended.

Strip what the gateway injects before it injects it: every header the gateway sets (identity,
X-Forwarded-*, X-Request-ID) is first removed in every spelling, so a client can never add one and
never remove one (a name listed in Connection is dropped before the gateway adds its own).
"""

from __future__ import annotations

import functools
import ipaddress
import itertools
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from multidict import CIMultiDictProxy

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Headers = list[tuple[str, str]]

HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
# Headers that rewrite the URL in some frameworks: nothing from the client may pick the page.
URL_OVERRIDES = frozenset({"x-original-url", "x-rewrite-url"})
# What only a trusted proxy may tell the frontend about the client.
FORWARDING = frozenset(
    {
        "forwarded",
        "x-forwarded-for",
        "x-forwarded-proto",
        "x-forwarded-host",
        "x-real-ip",
    }
)
# Claims about the original request that only a trusted proxy may make; dropped otherwise.
UNTRUSTED_ONLY = frozenset(
    {
        "x-forwarded-uri",
        "x-forwarded-method",
        "x-forwarded-prefix",
        "x-forwarded-port",
        "x-forwarded-server",
        "x-forwarded-ssl",
        "front-end-https",
        "x-client-ip",
        "true-client-ip",
        "x-cluster-client-ip",
    }
)
# Set by the gateway itself on the upstream request.
GATEWAY_SET = frozenset({"x-request-id", "expect", "host"})
WEBSOCKET_HANDSHAKE = frozenset(
    {
        "sec-websocket-key",
        "sec-websocket-version",
        "sec-websocket-extensions",
        "sec-websocket-protocol",
        "sec-websocket-accept",
    }
)
MAX_REQUEST_ID_LENGTH = 128
# Generated ids need to be unique, not secret: a random per-process prefix and a counter cost no
# system call per request (os.urandom did).
_ID_PREFIX = os.urandom(8).hex()
_ID_COUNTER = itertools.count()
_REQUEST_ID = re.compile(rf"^[A-Za-z0-9._:-]{{1,{MAX_REQUEST_ID_LENGTH}}}$")


def request_id_from(value: str | None) -> str:
    """Keep a client's X-Request-ID when it is safe to echo and log, else make one."""
    if value is not None and _REQUEST_ID.match(value):
        return value
    return f"{_ID_PREFIX}{next(_ID_COUNTER):016x}"


def _header_key(name: str) -> str:
    # Many frameworks (CGI, WSGI, PHP) read X_Auth_User and X-Auth-User as the same header.
    return name.lower().replace("_", "-")


@functools.lru_cache(maxsize=4096)
def clean_ip(text: str) -> str:
    address = ipaddress.ip_address(text.strip().strip("[]"))
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(address)


@dataclass(frozen=True, slots=True)
class Forwarding:
    """The gateway's view of where a request came from."""

    client_ip: str
    forwarded_for: str
    trusted: bool


class HeaderPolicy:
    """Builds the upstream request's headers from the client's."""

    def __init__(
        self, trusted_proxies: Sequence[Network], identity_headers: Iterable[str], scheme: str
    ) -> None:
        """`scheme` is what the gateway's listener speaks (https when it terminates TLS); a TLS
        proxy in front of a plain listener says otherwise through a trusted X-Forwarded-Proto."""
        self._trusted = tuple(trusted_proxies)
        self._scheme = scheme
        managed = HOP_BY_HOP | URL_OVERRIDES | FORWARDING | UNTRUSTED_ONLY | GATEWAY_SET
        self._identity = frozenset(_header_key(h) for h in identity_headers)
        self._always_drop = managed | self._identity
        self._untrusted_drop = self._always_drop
        # X-Forwarded-For is always rebuilt (extended for a trusted peer), never passed as it came.
        self._trusted_drop = (self._always_drop - FORWARDING - UNTRUSTED_ONLY) | {"x-forwarded-for"}
        self._is_trusted = functools.lru_cache(maxsize=1024)(self._lookup_trusted)

    def _lookup_trusted(self, ip: str) -> bool:
        try:
            address = ipaddress.ip_address(ip)
        except ValueError:
            return False
        return any(address in network for network in self._trusted)

    def trusts(self, ip: str) -> bool:
        return bool(self._trusted) and self._is_trusted(ip)

    def forwarding(self, peer: str, headers: CIMultiDictProxy[str]) -> Forwarding:
        """Who the client is: the peer, or (behind trusted proxies) the first untrusted hop."""
        try:
            peer_ip = clean_ip(peer)
        except ValueError:
            peer_ip = peer
        if not self.trusts(peer_ip):
            return Forwarding(peer_ip, peer_ip, trusted=False)
        incoming = [v.strip() for v in ",".join(headers.getall("X-Forwarded-For", ())).split(",")]
        incoming = [v for v in incoming if v]
        client = peer_ip
        for hop in reversed(incoming):
            try:
                hop_ip = clean_ip(hop)
            except ValueError:
                break
            client = hop_ip
            if not self.trusts(hop_ip):
                break
        chain = ", ".join([*incoming, peer_ip])
        return Forwarding(client, chain, trusted=True)

    def upstream_headers(
        self,
        headers: CIMultiDictProxy[str],
        forwarding: Forwarding,
        request_id: str,
        identity: Iterable[tuple[str, str]] = (),
        *,
        websocket: bool = False,
    ) -> Headers:
        """The client's headers, cleaned, then the gateway's own: forwarding, request id and the
        session's identity (only ever set here, after every client copy was dropped)."""
        drop = self._trusted_drop if forwarding.trusted else self._untrusted_drop
        if websocket:
            drop = drop | WEBSOCKET_HANDSHAKE
        named_in_connection = {
            _header_key(token.strip())
            for value in headers.getall("Connection", ())
            for token in value.split(",")
        }
        out: Headers = []
        for name, value in headers.items():
            key = _header_key(name)
            if key in drop or key in named_in_connection:
                continue
            out.append((name, value))
        host = headers.get("Host")
        if host is not None:
            out.append(("Host", host))
        out.append(("X-Forwarded-For", forwarding.forwarded_for))
        if not forwarding.trusted or "X-Forwarded-Proto" not in headers:
            out.append(("X-Forwarded-Proto", self._scheme))
        if host is not None and (not forwarding.trusted or "X-Forwarded-Host" not in headers):
            out.append(("X-Forwarded-Host", host))
        out.append(("X-Request-ID", request_id))
        out.extend(identity)
        return out


def header_tokens(values: Iterable[str]) -> set[str]:
    """Lower-cased comma-separated tokens of a list-valued header."""
    return {token.strip().lower() for value in values for token in value.split(",")}
