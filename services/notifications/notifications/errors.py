"""Errors of the notifications service; `STATUSES` maps the caller's ones to gRPC statuses.

NotificationsError      base class, never raised itself
├── InvalidArgument     a request field is wrong            -> INVALID_ARGUMENT
└── InvalidEvent        a broker message is not an order event we can use
                        (never reaches a gRPC caller: the consumer terminates
                        the message instead of retrying it forever)
"""

import grpc

from mesh.status import InvalidField, StatusTable


class NotificationsError(Exception):
    """Base of every error the notifications service raises on purpose."""


class InvalidArgument(InvalidField, NotificationsError):
    """A request field is malformed; `field` names it as in the contract."""


class InvalidEvent(NotificationsError):
    """A message on an order subject cannot be decoded into a notification."""


STATUSES: StatusTable = {
    # Ours, and those of mesh.paging (page_size, page_token).
    InvalidField: grpc.StatusCode.INVALID_ARGUMENT,
}
