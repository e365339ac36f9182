"""The request path, assembled in one place.

Each stage takes plain values and hands the next one a value; none writes to shared state:

    read (gateway/request.py)  ->  decide (gateway/decision.py)  ->  build the outbound request
    (gateway/outbound.py)  ->  relay (gateway/proxy.py)  ->  log (gateway/logs.py)

The order is the security model:
1. Read first, and refuse what cannot be read without ambiguity (version, header sizes, target,
   cookie) before any work is done for it; the request id, client address and secrets are known
   from here on, so even the earliest refusal and every log line carry and redact them.
2. Decide on the normalized path (the same path routing uses); nothing is sent to the app before
   that decision, and nothing after it can change the outcome.
3. Build the app's request: every header the gateway sets is stripped in every spelling, then set.
4. Relay, streaming both ways.
5. Log once, from the values the stages returned.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import aiohttp
from aiohttp import web

from gateway.assertion import JWKS_PATH, Asserter
from gateway.auth import AuthClient, Outcome
from gateway.config import GatewayConfig
from gateway.decision import Decision, SignInRequired, decide
from gateway.errors import GatewayError, Overloaded
from gateway.forwarded import HeaderPolicy
from gateway.limits import SHED_RETRY_AFTER, LoadWatch
from gateway.logs import RECORD_KEY, AccessRecord, bind_request
from gateway.metrics import Metrics
from gateway.outbound import build_outbound
from gateway.paths import PrefixTable
from gateway.policy import PUBLIC_RULE, Rule, build_rules
from gateway.request import ClientRequest, RequestReader
from gateway.responses import SignIn, error_response, own_answer, sign_in_response
from gateway.routing import Pools, Router

if TYPE_CHECKING:
    # Imported where it is used: redis costs 7 MiB of memory a gateway without it need not pay.
    from gateway.shared_cache import SharedCache

SHED = Overloaded("the gateway is overloaded", headers=(("Retry-After", SHED_RETRY_AFTER),))
# A request answered before a decision was made (it could not be read) is logged as public.
UNDECIDED = Decision(Outcome.PUBLIC)


@dataclass
class Runtime:
    """Everything built from one config: rules, routes, policies. Swapped whole on reload."""

    config: GatewayConfig
    reader: RequestReader
    rules: PrefixTable[Rule]
    policy: HeaderPolicy
    auth: AuthClient
    router: Router
    sign_in: SignIn
    assertion: Asserter | None

    @classmethod
    def build(
        cls,
        config: GatewayConfig,
        pools: Pools,
        metrics: Metrics,
        shared: SharedCache | None = None,
    ) -> Runtime:
        # The assertion header is stripped from clients like an identity header.
        signed = () if config.assertion is None else (config.assertion.header,)
        scheme = "http" if config.tls is None else "https"
        policy = HeaderPolicy(
            config.trusted_networks, (*config.auth.identity_headers, *signed), scheme
        )
        return cls(
            config=config,
            reader=RequestReader(
                policy, config.auth.cookie, config.max_header_bytes, config.limits.max_body_bytes
            ),
            rules=build_rules(config),
            policy=policy,
            auth=AuthClient(config.auth, pools.auth, metrics, shared),
            router=Router(config, pools, metrics),
            sign_in=SignIn(config.login_path, config.login_query, config.auth.cookie),
            assertion=Asserter.build(config),
        )


class Gateway:
    """The request handler: the stages above, in their order."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        # Set once serving: whether the process is overloaded, and so sheds (gateway/limits.py).
        self.load: LoadWatch | None = None
        # Relayed WebSockets (client side -> upstream side), closed with 1001 on shutdown.
        self.websockets: dict[web.WebSocketResponse, aiohttp.ClientWebSocketResponse] = {}

    async def __call__(self, request: web.BaseRequest) -> web.StreamResponse:
        rt = self.runtime
        headers = request.headers
        client = rt.reader.read(
            request.method,
            request.raw_path,
            request.version,
            headers,
            request.raw_headers,
            request.remote or "",
        )
        bind_request(client.request_id, client.secrets)
        decision, upstream_status, error = UNDECIDED, None, client.problem
        try:
            if error is not None:
                return self._refuse(request, client, error)
            if self._shed(client):
                error = SHED
                return self._refuse(request, client, error)
            if rt.assertion is not None and client.path == JWKS_PATH:
                # The keys the app verifies the assertion with: the gateway's own, before any
                # rule or route, so no config can send the path to the app.
                return own_answer(*rt.assertion.jwks_answer(request.method, client.request_id))
            decision = await decide(rt.rules.lookup(client.path) or PUBLIC_RULE, client, rt.auth)
            if decision.refusal is not None:
                error = decision.refusal
                return self._refuse(request, client, error, decision)
            outbound = build_outbound(client, decision, headers, rt)
            if client.websocket:
                return await outbound.relay.websocket(
                    request, outbound.target, outbound.headers, self.websockets, client.request_id
                )
            response = await outbound.relay.http(
                request, outbound.target, outbound.headers, outbound.answer
            )
            upstream_status = response.status
            return response
        except GatewayError as exc:
            error = exc
            return self._refuse(request, client, exc, decision)
        finally:
            request[RECORD_KEY] = _record(client, decision, upstream_status, error)

    def _shed(self, client: ClientRequest) -> bool:
        """Overloaded: everything but a signed-in user's cached session is shed, first thing,
        since a cached session costs the least to serve and its user is the one who notices."""
        load = self.load
        return (
            load is not None and load.overloaded and not self.runtime.auth.is_cached(client.session)
        )

    def _refuse(
        self,
        request: web.BaseRequest,
        client: ClientRequest,
        error: GatewayError,
        decision: Decision = UNDECIDED,
    ) -> web.StreamResponse:
        """The gateway's own answer for a request it does not pass on."""
        if isinstance(error, SignInRequired):
            return sign_in_response(
                request.headers,
                self.runtime.sign_in,
                (client.path, client.query),
                client.request_id,
                decision.set_cookies,
                websocket=client.websocket,
            )
        close = error.close_connection or client.upgrade
        return error_response(
            request.headers,
            error.status,
            error.reason,
            client.request_id,
            error.headers,
            close=close,
        )


def _record(
    client: ClientRequest,
    decision: Decision,
    upstream_status: int | None,
    error: GatewayError | None,
) -> AccessRecord:
    """The access line's values: what the stages returned, and the error answered, if any."""
    outcome = decision.outcome if error is None or error.outcome is None else error.outcome
    return AccessRecord(
        request_id=client.request_id,
        client_ip=client.client_ip,
        path=client.path,
        query=client.query or "",
        auth=str(outcome),
        upstream_status=upstream_status,
        error=None if error is None or isinstance(error, SignInRequired) else error.reason,
        secrets=client.secrets,
    )
