"""Authorization: the server interceptor that enforces `mesh/policy.yaml`.

With mTLS on, `mesh.server.build_server` installs `Authorization` after the
interceptors a service passes (tracing), so its check runs inside the server
span. Each call is checked when its handler starts, where the caller's
certificate is known (`context.auth_context()`; an interceptor's call details
carry only the method and metadata):

- `Policy.allows(service, caller identity, method)` must say yes (health is
  always open; reflection only where the policy lists it). A refusal ends the
  call with PERMISSION_DENIED naming the caller's identity and the method.
- A call that carries the gateway's customer header (`x-shop-subject`) must
  come from the gateway's identity: the header says whom the gateway vouches
  for, and nobody else may vouch (issue 9, item 5). A call from another
  identity with the header is refused, not served with the header ignored:
  ignoring it would make the call an internal one, trusted for every customer.

A refusal is logged (one line with the caller, method and service) and marks
the current span: status ERROR and `mesh.authz.denied=true`,
`mesh.authz.caller`. All four RPC shapes are guarded, so no handler can be
reached around the check.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

import grpc
from opentelemetry import trace
from opentelemetry.trace import Status, StatusCode

from mesh.identity import SUBJECT_HEADER
from mesh.interceptors import AroundEveryCall
from mesh.policy import HEALTH_SERVICE, Policy
from mesh.tls import peer_identity

__all__ = ["GATEWAY", "Authorization", "denial"]

log = logging.getLogger(__name__)

GATEWAY = "gateway"
# The same wording as the Go and TypeScript interceptors: one message in every language.
NO_IDENTITY = "no identity"


def denial(
    policy: Policy, service: str, identity: str | None, method: str, metadata: Any
) -> str | None:
    """Why `identity` may not make this call, or None when it may."""
    who = f"caller {identity or NO_IDENTITY}"
    if method.startswith(f"/{HEALTH_SERVICE}/"):
        return None  # open to every caller, whatever its metadata says
    if not policy.allows(service, identity, method):
        return f"{who} may not call {method}"
    if identity != policy.identity(GATEWAY) and any(
        key == SUBJECT_HEADER for key, _ in metadata or ()
    ):
        return (
            f"{who} may not send {SUBJECT_HEADER} (only {policy.identity(GATEWAY)} may) "
            f"calling {method}"
        )
    return None


class Authorization(AroundEveryCall):
    """Refuses every call `policy` does not allow `service` to take from its caller."""

    def __init__(self, policy: Policy, service: str) -> None:
        policy.identity(service)  # raises for a service that is not the shop's
        self._policy = policy
        self._service = service

    async def check(self, method: str, context: Any) -> None:
        identity = peer_identity(context)
        reason = denial(
            self._policy, self._service, identity, method, context.invocation_metadata()
        )
        if reason is None:
            return
        log.warning(
            "permission denied: %s",
            reason,
            extra={"caller": identity, "method": method, "target": self._service},
        )
        span = trace.get_current_span()
        span.set_attribute("mesh.authz.denied", True)
        span.set_attribute("mesh.authz.caller", identity or "")
        span.set_status(Status(StatusCode.ERROR, reason))
        await context.abort(grpc.StatusCode.PERMISSION_DENIED, reason)

    @contextlib.asynccontextmanager
    async def around(self, method: str, context: Any) -> AsyncIterator[None]:
        await self.check(method, context)
        yield
