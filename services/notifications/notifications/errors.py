"""Errors of the notifications service; `STATUSES` maps the caller's ones to gRPC statuses.

NotificationsError      base class, never raised itself
├── InvalidArgument     a request field is wrong            -> INVALID_ARGUMENT
├── NotYourCustomer     the caller acts for another customer -> PERMISSION_DENIED
│   (a mesh.identity.ActsForAnotherCustomer: the request names another
│   customer than the gateway's `x-shop-subject`, or none for a stream)
└── InvalidEvent        a broker message is not an order event we can use
                        (never reaches a gRPC caller: the consumer terminates
                        the message instead of retrying it forever)
"""

import grpc

from mesh.identity import ActsForAnotherCustomer
from mesh.status import InvalidField, StatusTable


class NotificationsError(Exception):
    """Base of every error the notifications service raises on purpose."""


class InvalidArgument(InvalidField, NotificationsError):
    """A request field is malformed; `field` names it as in the contract."""


class NotYourCustomer(ActsForAnotherCustomer, NotificationsError):
    """The caller acts for one customer and the request is about another."""


class InvalidEvent(NotificationsError):
    """A message on an order subject cannot be decoded into a notification."""


STATUSES: StatusTable = {
    # Ours, and those of mesh.paging (page_size, page_token).
    InvalidField: grpc.StatusCode.INVALID_ARGUMENT,
    ActsForAnotherCustomer: grpc.StatusCode.PERMISSION_DENIED,
}
