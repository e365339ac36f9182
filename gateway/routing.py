"""Which upstream serves a path: routes by longest prefix, each upstream with its own pool."""

from __future__ import annotations

import ssl
from dataclasses import dataclass

import aiohttp
from yarl import URL

from gateway.config import GatewayConfig
from gateway.metrics import Metrics
from gateway.paths import PrefixTable
from gateway.proxy import Relay, Upstream
from gateway.tls_config import UpstreamTlsConfig
from gateway.upstream import CONNECT_TIMEOUT, UpstreamPool
from gateway.upstream_tls import ClientTls

UPSTREAM_POOL_SIZE = 512
AUTH_POOL_SIZE = 128
KEEPALIVE_SECONDS = 75.0
# An idle connection to the frontend is retired by the gateway before the frontend can close it:
# Node's http server (a Qwik app's) closes idle connections after 5 s, and a request sent on a
# connection the frontend is closing fails.
UPSTREAM_IDLE_SECONDS = 4.0


def client_session(
    limit: int, skip_auto_headers: tuple[str, ...], tls: ssl.SSLContext
) -> aiohttp.ClientSession:
    """A keepalive pool that adds nothing of its own: no cookie jar, no decompression; https
    verified with `tls`."""
    connector = aiohttp.TCPConnector(
        limit=limit,
        limit_per_host=limit,
        keepalive_timeout=KEEPALIVE_SECONDS,
        ttl_dns_cache=10,
        ssl=tls,
    )
    return aiohttp.ClientSession(
        connector=connector,
        cookie_jar=aiohttp.DummyCookieJar(),
        auto_decompress=False,
        skip_auto_headers=skip_auto_headers,
        timeout=aiohttp.ClientTimeout(total=None, sock_connect=CONNECT_TIMEOUT),
        requote_redirect_url=False,
    )


class Pools:
    """One pool per upstream origin and TLS setting, kept across reloads so keepalive
    connections survive them; `tls` is upstream_tls, which the auth API's calls use too."""

    def __init__(self, tls: UpstreamTlsConfig | None = None) -> None:
        self._tls: dict[UpstreamTlsConfig | None, ClientTls] = {}
        auth_tls = self.client_tls(tls).context
        self.auth = client_session(AUTH_POOL_SIZE, ("Accept", "Accept-Encoding"), auth_tls)
        self._upstreams: dict[tuple[str, UpstreamTlsConfig | None], Upstream] = {}

    def client_tls(self, config: UpstreamTlsConfig | None) -> ClientTls:
        """One context per upstream_tls setting, shared by every origin that uses it."""
        found = self._tls.get(config)
        if found is None:
            found = self._tls[config] = ClientTls(config)
        return found

    def upstream(self, url: str, tls: UpstreamTlsConfig | None = None) -> Upstream:
        """The pool for plain requests to the frontend at `url`, and the session for WebSockets."""
        origin = URL(url).origin()
        client = self.client_tls(tls) if origin.scheme == "https" else None
        key = (str(origin), None if client is None else tls)
        if key not in self._upstreams:
            # The client's own headers are forwarded as they are; aiohttp adds none of its own.
            skip = ("Accept", "Accept-Encoding", "User-Agent", "Content-Type")
            context = self.client_tls(None).context if client is None else client.context
            self._upstreams[key] = Upstream(
                UpstreamPool(origin, UPSTREAM_POOL_SIZE, UPSTREAM_IDLE_SECONDS, client),
                client_session(UPSTREAM_POOL_SIZE, skip, context),
                None if client is None else client.server_name,
            )
        return self._upstreams[key]

    def reload_tls(self) -> None:
        """Read every client certificate again (SIGHUP)."""
        for client in self._tls.values():
            client.reload()

    async def close(self) -> None:
        await self.auth.close()
        for upstream in self._upstreams.values():
            await upstream.pool.close()
            await upstream.websockets.close()


@dataclass(frozen=True, slots=True)
class Route:
    """An upstream for a prefix; strip removes the prefix from the path sent upstream."""

    relay: Relay
    strip: bool


class Router:
    """Picks the relay and builds the upstream URL for a normalized path."""

    def __init__(self, config: GatewayConfig, pools: Pools, metrics: Metrics) -> None:
        self.default = Relay(
            pools.upstream(config.upstream, config.upstream_tls),
            URL(config.upstream),
            config.upstream_timeout,
            metrics,
        )
        self._routes: PrefixTable[Route] | None = None
        if config.routes:
            self._routes = PrefixTable(
                (
                    r.prefix,
                    Route(
                        Relay(
                            pools.upstream(r.upstream, r.upstream_tls or config.upstream_tls),
                            URL(r.upstream),
                            r.timeout or config.upstream_timeout,
                            metrics,
                        ),
                        r.strip_prefix,
                    ),
                )
                for r in config.routes
            )

    def resolve(self, path: str, query: str | None) -> tuple[Relay, str]:
        if self._routes is not None:
            found = self._routes.lookup_prefix(path)
            if found is not None:
                prefix, route = found
                if route.strip and prefix != "/":
                    # The prefix matched case-insensitively on whole segments, so its length is
                    # the length of the path's leading segments.
                    path = path[len(prefix) :] or "/"
                return route.relay, route.relay.target(path, query)
        return self.default, self.default.target(path, query)
