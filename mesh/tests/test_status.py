"""maps_errors: one table from domain errors to statuses, for every Python service."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2

from mesh.status import InvalidField, StatusTable, maps_errors


class ShopError(Exception):
    pass


class NotThere(ShopError):
    pass


class Gone(NotThere):
    """Not listed itself: found through its parent class."""


class BadInput(InvalidField, ShopError):
    pass


class Unlisted(ShopError):
    pass


TABLE: StatusTable = {
    BadInput: grpc.StatusCode.INVALID_ARGUMENT,
    NotThere: grpc.StatusCode.NOT_FOUND,
}


class Aborted(Exception):
    pass


class RecordingContext:
    """What a grpc.aio context is asked to do when a call ends with a status."""

    def __init__(self) -> None:
        self.code: grpc.StatusCode | None = None
        self.details: str | None = None
        self.status: grpc.Status | None = None

    def set_code(self, code: grpc.StatusCode) -> None:
        self.code = code

    async def abort(self, code: grpc.StatusCode, details: str) -> None:
        self.code, self.details = code, details
        raise Aborted

    async def abort_with_status(self, status: grpc.Status) -> None:
        self.status = status
        raise Aborted


class Servicer:
    def __init__(self, error: Exception | None) -> None:
        self.error = error

    @maps_errors(TABLE)
    async def Get(self, request: str, context: Any) -> str:  # noqa: N802
        if self.error is not None:
            raise self.error
        return f"reply to {request}"


async def test_a_successful_call_is_untouched() -> None:
    assert await Servicer(None).Get("x", RecordingContext()) == "reply to x"


@pytest.mark.parametrize("error", [NotThere("no such thing"), Gone("no such thing")])
async def test_listed_errors_and_their_subclasses_end_with_their_code(error: Exception) -> None:
    context = RecordingContext()
    with pytest.raises(Aborted):
        await Servicer(error).Get("x", context)
    assert (context.code, context.details) == (grpc.StatusCode.NOT_FOUND, "no such thing")


async def test_an_invalid_field_carries_a_bad_request_detail() -> None:
    context = RecordingContext()
    with pytest.raises(Aborted):
        await Servicer(BadInput("card.number", "fails the Luhn check")).Get("x", context)
    assert context.code == grpc.StatusCode.INVALID_ARGUMENT  # recorded for tracing
    assert context.status is not None
    trailers = dict(context.status.trailing_metadata)
    detail = status_pb2.Status.FromString(trailers["grpc-status-details-bin"]).details[0]
    request = error_details_pb2.BadRequest()
    assert detail.Unpack(request)
    assert [v.field for v in request.field_violations] == ["card.number"]
    assert context.status.details == "card.number: fails the Luhn check"


async def test_an_unlisted_error_is_left_to_the_interceptor() -> None:
    context = RecordingContext()
    with pytest.raises(Unlisted):
        await Servicer(Unlisted("surprise")).Get("x", context)
    assert context.code is None
