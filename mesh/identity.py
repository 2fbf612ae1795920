"""The caller's identity as the gateway passes it to the services behind it.

The gateway authenticates the caller (a JWT's `sub` claim or the subject of a
static API key) and forwards the result in one gRPC metadata header,
`SUBJECT_HEADER`. It strips any value a client sent under that name, so behind
the gateway the header says who the gateway vouches for, never what a client
claimed. Services trust it only on calls that come from the gateway (with
mesh mTLS on, from the gateway's own identity); a call without it has no
authenticated caller.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["SUBJECT_HEADER", "subject"]

# Lower case: gRPC metadata keys are case-insensitive and delivered lower case.
SUBJECT_HEADER = "x-shop-subject"


def subject(metadata: Iterable[tuple[str, str | bytes]] | None) -> str | None:
    """The authenticated subject in `metadata` (`context.invocation_metadata()`), or None."""
    for key, value in metadata or ():
        if key == SUBJECT_HEADER and isinstance(value, str) and value:
            return value
    return None
