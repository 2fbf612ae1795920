"""The caller's identity as the gateway passes it to the services behind it.

The gateway authenticates the caller (a JWT's `sub` claim or the subject of a
static API key) and forwards the result in one gRPC metadata header,
`SUBJECT_HEADER`. It strips any value a client sent under that name, so behind
the gateway the header says who the gateway vouches for, never what a client
claimed. Services trust it only on calls that come from the gateway (with
mesh mTLS on, from the gateway's own identity); a call without it has no
authenticated caller: an internal one (orders calling catalog, the demo, a
test), trusted to act for any customer.

A call with a subject acts for that one customer: `check_acts_for` refuses a
request that names another in one of its fields, and `check_owner` a read
by id of something another customer owns. Both raise `ActsForAnotherCustomer`
(each service subclasses it in its own error hierarchy, as it does
`mesh.status.InvalidField`), which the services map to PERMISSION_DENIED.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

__all__ = [
    "SUBJECT_HEADER",
    "ActsForAnotherCustomer",
    "check_acts_for",
    "check_owner",
    "subject",
    "trusted_subject",
]

# Lower case: gRPC metadata keys are case-insensitive and delivered lower case.
SUBJECT_HEADER = "x-shop-subject"


def subject(metadata: Iterable[tuple[str, str | bytes]] | None) -> str | None:
    """The authenticated subject in `metadata` (`context.invocation_metadata()`), or None.

    None only when the header is absent. A header that is present but empty
    (the gateway never sends one) is returned as "": a subject no customer id
    equals, so such a call may act for nobody rather than for everybody.
    """
    for key, value in metadata or ():
        if key == SUBJECT_HEADER:
            return value if isinstance(value, str) else ""
    return None


def trusted_subject(context: Any) -> str | None:
    """`subject` of a call's metadata, honoured only from the gateway.

    `context` is the servicer context. On a plaintext connection (mesh mTLS
    off) this is `subject(context.invocation_metadata())`. On an mTLS one the
    header counts only when the peer's identity is `gateway`; from any other
    peer its value is dropped and "" returned, a subject that acts for nobody:
    returning None would make the call an internal one, trusted for every
    customer. (With mTLS on, `mesh.authz.Authorization` already refuses such a
    call before a servicer sees it; this is the servicer's own check.)
    """
    value = subject(context.invocation_metadata())
    auth = context.auth_context() or {}
    if value is None or not auth.get("x509_pem_cert"):
        return value
    # Imported here: mesh.tls brings the crypto stack, which most users of
    # this module (the gateway's proxy, domain code) never need.
    from mesh.certs import spiffe_id
    from mesh.tls import peer_identity

    return value if peer_identity(context) == spiffe_id("gateway") else ""


class ActsForAnotherCustomer(Exception):
    """The caller acts for one customer and the request is about another.

    `field` names the request field as in the contract (`customer_id`, `id`);
    the message starts with it, as an `InvalidField`'s does.
    """

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


def check_acts_for(
    subject: str | None,
    field: str,
    customer_id: str,
    error: type[ActsForAnotherCustomer] = ActsForAnotherCustomer,
) -> None:
    """Raises `error` unless a caller acting for `subject` may name `customer_id` in `field`.

    Without a subject (an internal caller) any customer may be named. With
    one, only that customer: an empty `customer_id` too is refused, since
    where it is allowed at all it means "every customer".
    """
    if subject is None or customer_id == subject:
        return
    named = repr(customer_id) if customer_id else "every customer"
    raise error(field, f"the caller acts for {subject!r}, not {named}")


def check_owner(
    subject: str | None,
    field: str,
    what: str,
    owner: str,
    error: type[ActsForAnotherCustomer] = ActsForAnotherCustomer,
) -> None:
    """Raises `error` unless a caller acting for `subject` may read `what`, owned by `owner`.

    `what` names the thing read by the id in `field` (`order 'ord-1'`); the
    message never names its owner, which the caller has no right to learn.
    """
    if subject is None or owner == subject:
        return
    raise error(field, f"the caller acts for {subject!r}, and {what} belongs to another customer")
