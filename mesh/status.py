"""Domain errors to gRPC statuses, one table per service, one mapping for all.

Each service declares its errors (a small hierarchy without gRPC) and a
`StatusTable` from error class to status code; `maps_errors(table)` wraps a
servicer method so that an error listed there (or a subclass of one) ends
the call with its code and message. An `InvalidField` carries a
`google.rpc.BadRequest` detail naming the field, so clients in any language
can point at the exact input, and the message repeats it for people reading
grpcurl output. Anything not in the table is left to the mesh's
`UnexpectedErrors` interceptor, which turns it into INTERNAL.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

StatusTable = Mapping[type[Exception], grpc.StatusCode]
if TYPE_CHECKING:
    Context = grpc.aio.ServicerContext[Any, Any]
else:  # grpcio's classes are not generic at run time, only in grpc-stubs.
    Context = grpc.aio.ServicerContext
Method = TypeVar("Method", bound=Callable[..., Awaitable[Any]])


class InvalidField(Exception):
    """A request field is malformed; `field` names it as in the contract (`card.number`)."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


def bad_request(field: str, description: str) -> grpc.Status:
    violation = error_details_pb2.BadRequest.FieldViolation(field=field, description=description)
    detail = any_pb2.Any()
    detail.Pack(error_details_pb2.BadRequest(field_violations=[violation]))
    return rpc_status.to_status(
        status_pb2.Status(
            code=code_pb2.INVALID_ARGUMENT,
            message=f"{field}: {description}",
            details=[detail],
        )
    )


async def abort(context: Context, status: grpc.Status) -> NoReturn:
    """Ends the call with `status`."""
    # The server span (tracing.server_spans) reads the code from the context
    # when the call ends, which set_code and abort fill but abort_with_status
    # does not: without this line every INVALID_ARGUMENT would show as OK.
    context.set_code(status.code)
    await context.abort_with_status(status)  # type: ignore[attr-defined]  # not in grpc-stubs
    raise AssertionError("abort_with_status returned")  # it always raises


def status_code(error: Exception, table: StatusTable) -> grpc.StatusCode | None:
    """The code of the nearest class of `error` listed in `table`, if any."""
    for cls in type(error).__mro__:
        code = table.get(cls)
        if code is not None:
            return code
    return None


async def abort_for(context: Context, error: Exception, table: StatusTable) -> NoReturn:
    """Ends the call with the status `table` gives `error`; re-raises an unlisted error."""
    code = status_code(error, table)
    if code is None:
        raise error
    if isinstance(error, InvalidField) and code == grpc.StatusCode.INVALID_ARGUMENT:
        await abort(context, bad_request(error.field, error.problem))
    await context.abort(code, str(error))
    raise AssertionError("abort returned")  # it always raises


def maps_errors(table: StatusTable) -> Callable[[Method], Method]:
    """Decorates a unary servicer method `(self, request, context)` with `table`."""
    errors = tuple(table)

    def decorate(method: Method) -> Method:
        @functools.wraps(method)
        async def wrapper(self: Any, request: Any, context: Context) -> Any:
            try:
                return await method(self, request, context)
            except errors as error:
                await abort_for(context, error, table)

        return wrapper  # type: ignore[return-value]

    return decorate
