"""Checks the contract suites of every service share: error details, health, draining.

The services are written in three languages; these helpers hold each one to
the same observable behaviour over real gRPC.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import grpc
from google.rpc import error_details_pb2, status_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from localmode.processes import Stack
from localmode.topology import LocalService

NO_TRACING = {"OTEL_SDK_DISABLED": "true"}


def bad_request_fields(trailers: Any) -> list[str]:
    """Fields named by the google.rpc.BadRequest detail of an error's trailers."""
    raw = dict(trailers).get("grpc-status-details-bin")
    assert raw is not None, "INVALID_ARGUMENT without google.rpc.Status details"
    status = status_pb2.Status.FromString(raw)
    fields = []
    for detail in status.details:
        request = error_details_pb2.BadRequest()
        if detail.Unpack(request):
            fields += [violation.field for violation in request.field_violations]
    return fields


def assert_invalid_field(error: grpc.aio.AioRpcError, field: str) -> None:
    """INVALID_ARGUMENT whose message starts with the field and whose BadRequest names it."""
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error
    assert (error.details() or "").startswith(f"{field}:"), error.details()
    assert bad_request_fields(error.trailing_metadata() or ()) == [field]


async def assert_serving(target: str, service: str) -> None:
    async with grpc.aio.insecure_channel(target) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for name in ("", service):
            reply = await health.Check(health_pb2.HealthCheckRequest(service=name), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING, name


# Every call waits 1.5 s in the server, and SIGTERM leaves 1 s of NOT_SERVING.
DRAINING = {**NO_TRACING, "FAULT_DELAY_MS": "1500", "SHUTDOWN_DRAIN_SECONDS": "1"}


async def assert_sigterm_drains(
    start_stack: Callable[..., dict[str, LocalService]],
    name: str,
    slow_call: Callable[[grpc.aio.Channel], Awaitable[Any]],
    env: Mapping[str, str] | None = None,
    upstreams: Sequence[str] = (),
) -> Any:
    """Starts service `name` with DRAINING (plus `env`) and sends it SIGTERM
    while `slow_call` is in flight; health must turn NOT_SERVING and the call
    must still complete. Returns the call's reply. `upstreams` are started
    first, without tracing or faults, for a service whose call needs them."""
    stack_env = {upstream: NO_TRACING for upstream in upstreams}
    stack_env[name] = {**DRAINING, **(env or {})}
    service = start_stack([*upstreams, name], env=stack_env)[name]
    target = service.grpc_target
    assert target is not None
    pid = Stack(service.run_dir).pid(name)
    assert pid is not None
    async with grpc.aio.insecure_channel(target) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        in_flight = asyncio.ensure_future(slow_call(channel))
        await asyncio.sleep(0.3)  # the call is now inside the server's delay
        assert not in_flight.done(), "the call finished before SIGTERM: raise the fault delay"
        os.kill(pid, signal.SIGTERM)
        status = None
        for _ in range(50):  # bounded poll during the drain
            reply = await health.Check(health_pb2.HealthCheckRequest(), timeout=1)
            status = reply.status
            if status == health_pb2.HealthCheckResponse.NOT_SERVING:
                break
            await asyncio.sleep(0.02)
        assert status == health_pb2.HealthCheckResponse.NOT_SERVING
        return await in_flight
