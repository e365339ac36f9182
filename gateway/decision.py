"""Stage 2 of the request path: who may have this page. The only place the auth outcome is set.

The decision is made on the normalized path's rule before anything is sent to the app; it is a
value the next stages read: allow (with the identity, if any, the auth API's cookies, and whether
the answer depends on the session) or refuse (with the typed error that knows its status).
"""

from __future__ import annotations

from dataclasses import dataclass

import structlog

from gateway.auth import AuthClient, Identity, Outcome
from gateway.errors import AuthUnavailable, GatewayError
from gateway.policy import Access, Rule
from gateway.request import ClientRequest

log = structlog.get_logger("gateway.decision")


class SignInRequired(GatewayError):
    """No valid session on a protected path: sent to sign in (302), or 401 for a script."""

    status = 401
    outcome = Outcome.DENIED


class Forbidden(GatewayError):
    """A signed-in user who fails a rule's `require`: refused, never sent to sign in again
    (that would loop)."""

    status = 403
    outcome = Outcome.FORBIDDEN


@dataclass(frozen=True, slots=True)
class Decision:
    """The decision for one request. `refusal` set: answered by the gateway, the app never sees
    it. Otherwise it goes upstream with `identity`'s headers (None: anonymous)."""

    outcome: Outcome
    identity: Identity | None = None
    set_cookies: tuple[str, ...] = ()
    # The answer depends on the session: no shared cache may store it.
    private: bool = False
    refusal: GatewayError | None = None


PUBLIC = Decision(Outcome.PUBLIC)
ANONYMOUS = Decision(Outcome.ANONYMOUS, private=True)
DEGRADED = Decision(Outcome.DEGRADED, private=True)
NO_SESSION = Decision(Outcome.DENIED, refusal=SignInRequired("a valid session is needed"))


async def decide(rule: Rule, request: ClientRequest, auth: AuthClient) -> Decision:
    """Public paths pass as they are; protected ones need a valid session meeting `require`;
    optional ones pass either way, with the identity when there is one."""
    if rule.access is Access.PUBLIC:
        return PUBLIC
    protect = rule.access is Access.PROTECT
    if request.session is None:
        return NO_SESSION if protect else ANONYMOUS
    try:
        verdict = await auth.verify(request.session, request.client_ip, request.request_id)
    except AuthUnavailable as exc:
        if protect:
            return Decision(Outcome.ERROR, refusal=exc)
        # Anonymous is allowed here anyway: degrade rather than refuse, and say so.
        log.warning("optional sign-in degraded", reason=exc.reason)
        return DEGRADED
    except GatewayError as exc:
        return Decision(Outcome(exc.outcome or Outcome.ERROR), refusal=exc)
    identity = verdict.identity
    if identity is None:
        if protect:
            return Decision(Outcome.DENIED, None, verdict.set_cookies, refusal=NO_SESSION.refusal)
        return Decision(Outcome.ANONYMOUS, None, verdict.set_cookies, private=True)
    if protect:
        field = rule.unmet(identity.claims)
        if field is not None:
            refusal = Forbidden(f"this page requires a different account ({field})")
            return Decision(Outcome.FORBIDDEN, refusal=refusal)
    return Decision(verdict.outcome, identity, verdict.set_cookies, private=True)
