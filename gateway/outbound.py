"""Stage 3 of the request path: the request the app will get, built from what was read and
decided. Headers are stripped and injected in one call (HeaderPolicy.upstream_headers), so an
identity header can only ever come from the decision."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from multidict import CIMultiDictProxy

from gateway.assertion import Asserter
from gateway.auth import AuthClient
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


class Stages(Protocol):
    """What the outbound stage needs of the runtime: header policy, routes, the signer."""

    policy: HeaderPolicy
    router: Router
    assertion: Asserter | None
    auth: AuthClient


def build_outbound(
    request: ClientRequest,
    decision: Decision,
    headers: CIMultiDictProxy[str],
    rt: Stages,
) -> Outbound:
    upstream_headers = rt.policy.upstream_headers(
        headers,
        request.forwarding,
        request.request_id,
        _identity(request, decision, headers, rt),
        websocket=request.websocket,
    )
    relay, target = rt.router.resolve(request.path, request.query)
    if decision.private or decision.set_cookies or request.upgrade:
        answer = AnswerRules(decision.private, decision.set_cookies, request.upgrade)
    else:
        answer = AS_SENT
    return Outbound(relay, target, upstream_headers, answer)


def _identity(
    request: ClientRequest, decision: Decision, headers: CIMultiDictProxy[str], rt: Stages
) -> Sequence[tuple[str, str]]:
    """The identity headers, and the signed assertion of them when it is configured."""
    identity = decision.identity
    if identity is None:
        return ()
    if rt.assertion is None or request.session is None:
        return identity.headers
    audience = rt.assertion.audience(headers, request.forwarding.trusted)
    digest = functools.partial(rt.auth.digest, request.session)
    return (*identity.headers, rt.assertion.header(identity.claims, digest, audience))
