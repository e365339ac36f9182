"""Stage 3 of the request path: the request the app will get, built from what was read and
decided. Headers are stripped and injected in one call (HeaderPolicy.upstream_headers), so an
identity header can only ever come from the decision."""

from __future__ import annotations

from dataclasses import dataclass

from multidict import CIMultiDictProxy

from gateway.decision import Decision
from gateway.forwarded import HeaderPolicy, Headers
from gateway.proxy import Relay
from gateway.request import ClientRequest
from gateway.responses import AS_SENT, AnswerRules
from gateway.routing import Router


@dataclass(frozen=True, slots=True)
class Outbound:
    """One request for the app: where it goes, with which headers, and what the gateway changes
    on the answer."""

    relay: Relay
    target: str
    headers: Headers
    answer: AnswerRules


def build_outbound(
    request: ClientRequest,
    decision: Decision,
    headers: CIMultiDictProxy[str],
    policy: HeaderPolicy,
    router: Router,
) -> Outbound:
    identity = () if decision.identity is None else decision.identity.headers
    upstream_headers = policy.upstream_headers(
        headers, request.forwarding, request.request_id, identity, websocket=request.websocket
    )
    relay, target = router.resolve(request.path, request.query)
    if decision.private or decision.set_cookies or request.upgrade:
        answer = AnswerRules(decision.private, decision.set_cookies, request.upgrade)
    else:
        answer = AS_SENT
    return Outbound(relay, target, upstream_headers, answer)
