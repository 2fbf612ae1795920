"""Why the gateway itself ends a call, before any upstream sees it.

GatewayError          base class, never raised itself
├── Unauthenticated   a credential is missing, malformed, forged or expired
│                     -> UNAUTHENTICATED
└── RateLimited       the caller's token bucket is empty
                      -> RESOURCE_EXHAUSTED, `grpc-retry-pushback-ms` in the trailers

A call for a service that is not routed is UNIMPLEMENTED (see `proxy`), and an
upstream's own status goes back to the caller unchanged; neither is an error
of the gateway.
"""

from __future__ import annotations

import math


class GatewayError(Exception):
    """Base of the refusals the gateway reports to a caller itself."""


class Unauthenticated(GatewayError):
    """The message says what is wrong with the credential, never the credential."""


class RateLimited(GatewayError):
    def __init__(self, retry_after_s: float) -> None:
        self.pushback_ms = max(1, math.ceil(retry_after_s * 1000))
        super().__init__(f"rate limit exceeded: retry in {self.pushback_ms} ms")
