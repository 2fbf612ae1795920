"""What the gateway's tests share: a test-only upstream, the credentials, small helpers.

`EchoUpstream` serves `test.echo.v1.Echo`, raw bytes, in its own thread.

The gateway's tests need an upstream whose every call they can inspect: what
metadata and deadline arrived, whether a cancellation did, and that a call
the gateway must refuse never arrived at all. This one is a grpc.aio server
on its own event loop in a background thread (so it outlives each test's
loop and serves gateway processes started once per module), with methods of
all four shapes and no generated code:

- `Unary`: echoes the request with header `x-echo-initial` and trailers
  `x-echo-trailer` / `x-echo-bin`; `fail` ends NOT_FOUND with a
  `google.rpc.Status` detail, `unavailable` ends UNAVAILABLE, `big:<n>`
  answers n bytes.
- `ServerStream`: the request three times, `#0`..`#2` appended.
- `ClientStream`: the requests joined by `|`.
- `Bidi`: `echo:` + each request, as it arrives; after a `hold` request it
  stays open once the requests end, until cancelled (or 30 s).
- `Slow`: waits until cancelled (or 30 s), recording the deadline it saw.

Health is the library's servicer, SERVING. Any other method echoes each
request (so a route for any service can point here), and the OTLP trace
export method is a sink that keeps what a gateway exports.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
import jwt
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from gateway.auth import mint_token
from gateway.config import AuthConfig
from mesh.server import HealthServicer

if TYPE_CHECKING:
    Context = grpc.aio.ServicerContext[bytes, bytes]
    Handler = grpc.RpcMethodHandler[bytes, bytes]
    GenericRpcHandler = grpc.GenericRpcHandler[bytes, bytes]
else:
    Context = grpc.aio.ServicerContext
    Handler = grpc.RpcMethodHandler
    GenericRpcHandler = grpc.GenericRpcHandler

ECHO = "test.echo.v1.Echo"
OTLP_EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
# What the echo's NOT_FOUND carries in grpc-status-details-bin.
FAILURE_DETAILS = status_pb2.Status(
    code=code_pb2.NOT_FOUND,
    message="no such echo",
    details=[
        any_pb2.Any(
            type_url="type.googleapis.com/google.rpc.ErrorInfo",
            value=error_details_pb2.ErrorInfo(
                reason="NO_ECHO", domain="echo.test"
            ).SerializeToString(),
        )
    ],
).SerializeToString()
LARGE = 64 * 1024 * 1024  # the echo's own limits are far above any gateway's

# The credentials the tests' gateways are configured with.
JWT_KEY = "contract-test-key-of-at-least-32-bytes"
ISSUER = "contract-issuer"
AUDIENCE = "contract-audience"
API_KEY = "contract-api-key-0123456789"
AUTH = AuthConfig(JWT_KEY.encode(), ISSUER, AUDIENCE, {API_KEY: "cus-key"})
BASE_ENV = {
    "GATEWAY_JWT_KEY": JWT_KEY,
    "GATEWAY_JWT_ISSUER": ISSUER,
    "GATEWAY_JWT_AUDIENCE": AUDIENCE,
    "GATEWAY_API_KEYS": f"{API_KEY}=cus-key",
    "SHUTDOWN_DRAIN_SECONDS": "0",
    "SHUTDOWN_GRACE_SECONDS": "1",
    # The gateway against an echo upstream outside the mesh (tests/mesh has mTLS).
    "MESH_MTLS": "off",
}
MiB = 1024 * 1024
# Clients accept large answers, so a refusal is the gateway's, not the client's.
CLIENT_OPTIONS = [("grpc.max_receive_message_length", LARGE)]
TIMEOUT = 10.0


def pairs(metadata: Any) -> tuple[tuple[str, Any], ...]:
    """grpc.aio.Metadata (or None) as plain pairs."""
    return tuple((key, value) for key, value in metadata or ())


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


def token(**changes: Any) -> str:
    """A JWT the gateways accept, with `changes` to its claims (None removes one)."""
    claims: dict[str, Any] = jwt.decode(
        mint_token(AUTH, "cus-jwt", 600), options={"verify_signature": False}
    )
    claims = {k: v for k, v in {**claims, **changes}.items() if v is not None}
    return jwt.encode(claims, JWT_KEY, algorithm="HS256")


def write_routes(path: Path, routes: list[dict[str, str]]) -> Path:
    path.write_text(json.dumps({"routes": routes}))  # JSON is YAML
    return path


def echo_method(channel: grpc.aio.Channel, method: str) -> Any:
    """A raw-bytes unary callable for `test.echo.v1.Echo/<method>`."""
    return channel.unary_unary(f"/{ECHO}/{method}", None, None)


async def until(predicate: Callable[[], Any], timeout_s: float = 10.0) -> Any:
    """Polls `predicate` without blocking the event loop until it is truthy."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        await asyncio.sleep(0.02)
    raise AssertionError(f"not true within {timeout_s}s")


@dataclass
class Seen:
    """One call as the upstream received it."""

    method: str
    metadata: tuple[tuple[str, str | bytes], ...]
    time_remaining: float | None
    requests: list[bytes] = field(default_factory=list)
    cancelled: bool = False

    def values(self, key: str) -> list[str | bytes]:
        return [value for k, value in self.metadata if k == key]


class EchoUpstream:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._calls: list[Seen] = []
        self.exports: list[bytes] = []  # OTLP ExportTraceServiceRequest bytes
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: grpc.aio.Server | None = None
        self.port = 0

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> EchoUpstream:
        self._thread.start()
        self.port = asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    async def _start(self) -> int:
        options = [
            ("grpc.max_receive_message_length", LARGE),
            ("grpc.max_send_message_length", LARGE),
        ]
        self._server = grpc.aio.server(options=options)
        # The library's health service, as every upstream of the mesh has:
        # the gateway's channels check it before sending calls.
        health = HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(health, self._server)
        await health.set("", health_pb2.HealthCheckResponse.SERVING)
        self._server.add_generic_rpc_handlers((_Handlers(self),))
        port = self._server.add_insecure_port("127.0.0.1:0")
        await self._server.start()
        return port

    async def _stop(self) -> None:
        if self._server is not None:
            await self._server.stop(None)

    def record(self, method: str, context: Context) -> Seen:
        metadata = tuple((k, v) for k, v in context.invocation_metadata() or ())
        seen = Seen(method, metadata, context.time_remaining())
        with self._lock:
            self._calls.append(seen)
        return seen

    def calls(self, method: str | None = None) -> list[Seen]:
        with self._lock:
            return [c for c in self._calls if method is None or c.method == method]

    def count(self) -> int:
        with self._lock:
            return len(self._calls)


class _Handlers(GenericRpcHandler):
    def __init__(self, upstream: EchoUpstream) -> None:
        self._upstream = upstream

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> Handler | None:
        method = handler_call_details.method
        up = self._upstream
        if method.startswith("/grpc.health.v1.Health/"):
            return None  # the health servicer's
        if method == OTLP_EXPORT:

            async def export(request: bytes, context: Context) -> bytes:
                up.exports.append(request)
                return b""  # an empty ExportTraceServiceResponse: all accepted

            return grpc.unary_unary_rpc_method_handler(export)
        name = method.removeprefix(f"/{ECHO}/")
        if name == "Unary":
            return grpc.unary_unary_rpc_method_handler(self._unary(method))
        if name == "ServerStream":
            return grpc.unary_stream_rpc_method_handler(self._server_stream(method))
        if name == "ClientStream":
            return grpc.stream_unary_rpc_method_handler(self._client_stream(method))
        if name == "Bidi":
            return grpc.stream_stream_rpc_method_handler(self._bidi(method, b"echo:"))
        if name == "Slow":
            return grpc.unary_unary_rpc_method_handler(self._slow(method))
        return grpc.stream_stream_rpc_method_handler(self._bidi(method, b""))

    def _unary(self, method: str) -> Callable[[bytes, Context], Any]:
        async def unary(request: bytes, context: Context) -> bytes:
            self._upstream.record(method, context).requests.append(request)
            if request == b"unavailable":
                await context.abort(grpc.StatusCode.UNAVAILABLE, "echo is resting")
            await context.send_initial_metadata((("x-echo-initial", "1"),))
            if request == b"fail":
                await context.abort(
                    grpc.StatusCode.NOT_FOUND,
                    "no such echo",
                    (("x-echo-trailer", "t"), ("grpc-status-details-bin", FAILURE_DETAILS)),
                )
            context.set_trailing_metadata((("x-echo-trailer", "t"), ("x-echo-bin", b"\x00\xff")))
            if request.startswith(b"big:"):
                return b"x" * int(request[4:])
            return request

        return unary

    def _server_stream(self, method: str) -> Callable[[bytes, Context], AsyncIterator[bytes]]:
        async def server_stream(request: bytes, context: Context) -> AsyncIterator[bytes]:
            self._upstream.record(method, context).requests.append(request)
            for index in range(3):
                yield request + b"#%d" % index

        return server_stream

    def _client_stream(self, method: str) -> Callable[[AsyncIterator[bytes], Context], Any]:
        async def client_stream(requests: AsyncIterator[bytes], context: Context) -> bytes:
            seen = self._upstream.record(method, context)
            async for request in requests:
                seen.requests.append(request)
            return b"|".join(seen.requests)

        return client_stream

    def _bidi(
        self, method: str, prefix: bytes
    ) -> Callable[[AsyncIterator[bytes], Context], AsyncIterator[bytes]]:
        async def bidi(requests: AsyncIterator[bytes], context: Context) -> AsyncIterator[bytes]:
            seen = self._upstream.record(method, context)
            try:
                async for request in requests:
                    seen.requests.append(request)
                    yield prefix + request
                if b"hold" in seen.requests:
                    # grpc.aio shows a client's cancellation to a streaming
                    # handler as the end of its requests; only a handler
                    # still running afterwards is cancelled.
                    await asyncio.sleep(30)
            except asyncio.CancelledError:
                seen.cancelled = True
                raise

        return bidi

    def _slow(self, method: str) -> Callable[[bytes, Context], Any]:
        async def slow(request: bytes, context: Context) -> bytes:
            seen = self._upstream.record(method, context)
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                seen.cancelled = True
                raise
            return request

        return slow
