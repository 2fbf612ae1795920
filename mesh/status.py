"""gRPC statuses with google.rpc error details, for servicers to abort with.

INVALID_ARGUMENT carries a `BadRequest` detail naming the field, so clients
in any language can point at the exact input, and the message repeats it for
people reading grpcurl output.
"""

from __future__ import annotations

from typing import Any, NoReturn

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status


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


async def abort(context: Any, status: grpc.Status) -> NoReturn:
    """Ends the call with `status`; `context` is a grpc.aio.ServicerContext."""
    # OpenTelemetry's gRPC instrumentation records the status code from
    # set_code/abort but not from abort_with_status: without this line every
    # INVALID_ARGUMENT would show as OK in Jaeger.
    context.set_code(status.code)
    await context.abort_with_status(status)
    raise AssertionError("abort_with_status returned")  # it always raises
