"""The transparent proxy: a generic handler that forwards message bytes, never decoding them.

For each call to a routed service the proxy

1. admits it (`Gate`): drops hop-by-hop and credential metadata, authenticates
   the caller, takes a token from the caller's bucket; a refusal ends the call
   here, before any upstream is called;
2. calls the route's upstream on its one shared channel with the same method,
   the remaining metadata plus `x-shop-subject`, and the client's deadline;
3. returns the upstream's headers, messages, trailers, status code and
   message (so `grpc-status-details-bin` too) as they came, except that an
   UNAVAILABLE the gateway's own channel produced (no connection) says which
   service is unavailable rather than which address failed;
4. writes one access log line, once the response is on its way.

Handlers come from the method's shape when the service's descriptor is known
(`contracts`), so a unary call takes grpc.aio's unary fast path; methods of a
service without a descriptor get a bidirectional-stream handler, which carries
every shape on the wire. A client's cancellation cancels the handler's task,
and with it the upstream call (`gateway.cancellation` covers the case where
client interceptors stand between the two).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, NoReturn

import grpc
from opentelemetry import trace

from gateway.accesslog import AccessLog, CallRecord
from gateway.auth import Authenticator
from gateway.cancellation import cancel, capture
from gateway.contracts import Shape, contract_shapes
from gateway.errors import GatewayError, RateLimited, Unauthenticated
from gateway.ratelimit import TokenBuckets
from gateway.routes import Auth, Route
from mesh.channels import Channels
from mesh.identity import SUBJECT_HEADER
from mesh.interceptors import is_infrastructure

if TYPE_CHECKING:
    Context = grpc.aio.ServicerContext[bytes, bytes]
    Handler = grpc.RpcMethodHandler[bytes, bytes]
    GenericRpcHandler = grpc.GenericRpcHandler[bytes, bytes]
else:  # grpcio's classes are not generic at run time, only in grpc-stubs.
    Context = grpc.aio.ServicerContext
    Handler = grpc.RpcMethodHandler
    GenericRpcHandler = grpc.GenericRpcHandler

__all__ = ["PUSHBACK_TRAILER", "Gate", "Proxy"]

log = logging.getLogger(__name__)

Metadata = tuple[tuple[str, str | bytes], ...]
Request = bytes | AsyncIterator[bytes]  # unary, or client streaming
ShapeLookup = Callable[[str], Mapping[str, Shape] | None]

# The gRPC name of the "retry after" trailer (gRFC A6), in milliseconds.
PUSHBACK_TRAILER = "grpc-retry-pushback-ms"
# The attribute OpenTelemetry's semantic conventions give an authenticated user.
ENDUSER_ID = "enduser.id"
# Request metadata that stays at the gateway: HTTP hop-by-hop headers, what the
# transport sets for each hop itself, and credentials, including any identity
# a client claims for itself (only the gateway's own `x-shop-subject` goes on).
DROPPED_REQUEST_KEYS = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "user-agent",
        "grpc-timeout",
        "grpc-encoding",
        "grpc-accept-encoding",
        "content-type",
        "authorization",
        SUBJECT_HEADER,
    }
)
# Unknown-shape methods get a handler each on first use; beyond this many
# distinct names (a client inventing method names) handlers are not kept.
MAX_CACHED_HANDLERS = 1024


def peer_address(peer: str) -> str:
    """`ipv4:10.0.0.1:51234` -> `ipv4:10.0.0.1`: a client keeps its bucket across ports."""
    if peer.startswith(("ipv4:", "ipv6:")):
        return peer.rpartition(":")[0]
    return peer


def _cancelled_code(context: Context) -> grpc.StatusCode:
    remaining = context.time_remaining()
    expired = remaining is not None and remaining <= 0
    return grpc.StatusCode.DEADLINE_EXCEEDED if expired else grpc.StatusCode.CANCELLED


class Gate:
    """What every call passes before an upstream sees it: metadata, identity, rate."""

    def __init__(
        self,
        authenticator: Authenticator,
        buckets: TokenBuckets | None,
        default_timeout_s: float | None = None,
    ) -> None:
        self._authenticator = authenticator
        self._buckets = buckets
        self._default_timeout_s = default_timeout_s

    def admit(
        self, context: Context, auth: Auth, record: CallRecord
    ) -> tuple[Metadata, float | None]:
        """The metadata and timeout for the upstream call; raises a GatewayError to refuse."""
        record.peer = peer = context.peer()
        forwarded: list[tuple[str, str | bytes]] = []
        authorization: str | None = None
        for key, value in context.invocation_metadata() or ():
            if key not in DROPPED_REQUEST_KEYS:
                forwarded.append((key, value))
            elif key == "authorization":
                if authorization is not None:
                    raise Unauthenticated("more than one authorization header")
                authorization = value if isinstance(value, str) else ""
        if authorization is not None:
            identity = record.identity = self._authenticator.authenticate(authorization)
            forwarded.append((SUBJECT_HEADER, identity.subject))
            trace.get_current_span().set_attribute(ENDUSER_ID, identity.subject)
            caller = "subject:" + identity.subject
        elif auth is Auth.REQUIRED:
            raise Unauthenticated(
                "this service requires authentication: send 'authorization: Bearer <token>'"
            )
        else:
            caller = "peer:" + peer_address(peer)
        if self._buckets is not None:
            wait_s = self._buckets.take(caller)
            if wait_s > 0:
                raise RateLimited(wait_s)
        timeout = context.time_remaining()
        return tuple(forwarded), self._default_timeout_s if timeout is None else timeout


class _Forwarder:
    """Forwards the calls of one method to one upstream.

    One coroutine serves both shapes with a single response (unary and
    client streaming), one async generator both with a stream of responses:
    they differ only in whether the request is bytes or a stream of them.
    """

    def __init__(
        self,
        method: str,
        route: Route,
        channels: Channels,
        gate: Gate,
        access_log: AccessLog,
        intercepted: bool,
    ) -> None:
        self._method = method
        self._route = route
        self._channels = channels
        self._gate = gate
        self._access_log = access_log
        self._intercepted = intercepted  # the channel has client interceptors (tracing)
        self._shape = "stream_stream"  # which of the channel's multicallables to use
        self._channel: grpc.aio.Channel | None = None
        self._multicallable: Any = None

    def handler(self, shape: Shape | None) -> Handler:
        """The handler for `shape`, bidirectional streaming when the shape is unknown."""
        if shape == Shape(False, False):
            self._shape = "unary_unary"
            return grpc.unary_unary_rpc_method_handler(self.single_response)
        if shape == Shape(False, True):
            self._shape = "unary_stream"
            return grpc.unary_stream_rpc_method_handler(self.streamed_response)
        if shape == Shape(True, False):
            self._shape = "stream_unary"
            return grpc.stream_unary_rpc_method_handler(self.single_response)
        return grpc.stream_stream_rpc_method_handler(self.streamed_response)

    def _call(self, request: Request, **kwargs: Any) -> Any:
        """Starts the upstream call on the route's channel as Channels gives it
        now: a new one after a certificate rotation, whose old one closes."""
        channel = self._channels.get(self._route.upstream, self._route.mesh_service)
        if channel is not self._channel:
            # bytes as they are: no serializers
            self._multicallable = getattr(channel, self._shape)(self._method, None, None)
            self._channel = channel
        return self._multicallable(request, **kwargs)

    def _admit(
        self, request: Request, context: Context, record: CallRecord
    ) -> tuple[Request, Metadata, float | None]:
        """The request as it goes upstream (a stream counts its bytes as they pass),
        with its metadata and timeout; raises a GatewayError to refuse the call."""
        metadata, timeout = self._gate.admit(context, self._route.auth, record)
        if isinstance(request, bytes):
            record.request_bytes = len(request)
        else:
            request = _counted(request, record)
        return request, metadata, timeout

    async def single_response(self, request: Request, context: Context) -> bytes:
        record = CallRecord(self._method, self._route.upstream)
        try:
            request, metadata, timeout = self._admit(request, context, record)
            captured = capture() if self._intercepted else None
            call = self._call(request, metadata=metadata, timeout=timeout)
            try:
                response: bytes = await call
            except grpc.aio.AioRpcError as error:
                await self._relay_error(context, error, record, headers_sent=False)
            except asyncio.CancelledError:
                cancel(call, captured)
                raise
            headers = await call.initial_metadata()
            if headers:
                await context.send_initial_metadata(_pairs(headers))
            trailers = await call.trailing_metadata()
            if trailers:
                context.set_trailing_metadata(_pairs(trailers))
            record.response_bytes = len(response)
            record.code = grpc.StatusCode.OK
            return response
        except GatewayError as error:
            await self._refuse(context, error, record)
        except asyncio.CancelledError:
            record.code = _cancelled_code(context)
            raise
        finally:
            self._access_log.write_soon(record)

    async def streamed_response(self, request: Request, context: Context) -> AsyncIterator[bytes]:
        record = CallRecord(self._method, self._route.upstream)
        call = None
        headers_sent = False
        try:
            request, metadata, timeout = self._admit(request, context, record)
            call = self._call(request, metadata=metadata, timeout=timeout)
            try:
                headers = await call.initial_metadata()
                if headers:
                    await context.send_initial_metadata(_pairs(headers))
                    headers_sent = True
                async for message in call:
                    headers_sent = True  # with the first message, if not before
                    record.response_bytes += len(message)
                    yield message
            except grpc.aio.AioRpcError as error:
                await self._relay_error(context, error, record, headers_sent)
            trailers = await call.trailing_metadata()
            if trailers:
                context.set_trailing_metadata(_pairs(trailers))
            record.code = grpc.StatusCode.OK
        except GatewayError as error:
            await self._refuse(context, error, record)
        except (asyncio.CancelledError, GeneratorExit):
            record.code = _cancelled_code(context)
            raise
        finally:
            if call is not None:
                call.cancel()  # a no-op once the call is done
            self._access_log.write_soon(record)

    async def _relay_error(
        self,
        context: Context,
        error: grpc.aio.AioRpcError,
        record: CallRecord,
        headers_sent: bool,
    ) -> NoReturn:
        """Ends the call with the upstream's status, headers and trailers."""
        code = record.code = error.code()
        details = error.details() or ""
        if code is grpc.StatusCode.UNAVAILABLE and not self._connected():
            # The gateway's channel failed, not the service: its message names
            # internal addresses, which stay in the gateway's own log.
            log.warning("%s: upstream %s: %s", self._method, self._route.upstream, details)
            details = f"{self._route.service} is unavailable"
        if not headers_sent:
            headers = error.initial_metadata()
            if headers:
                await context.send_initial_metadata(_pairs(headers))
        await context.abort(code, details, _pairs(error.trailing_metadata()))
        raise AssertionError("abort returned")  # it always raises

    def _connected(self) -> bool:
        channel = self._channel
        return channel is not None and channel.get_state() is grpc.ChannelConnectivity.READY

    async def _refuse(self, context: Context, error: GatewayError, record: CallRecord) -> NoReturn:
        if isinstance(error, RateLimited):
            record.code = grpc.StatusCode.RESOURCE_EXHAUSTED
            trailers: Metadata = ((PUSHBACK_TRAILER, str(error.pushback_ms)),)
        else:
            record.code = grpc.StatusCode.UNAUTHENTICATED
            trailers = ()
        await context.abort(record.code, str(error), trailers)
        raise AssertionError("abort returned")  # it always raises


def _pairs(metadata: Any) -> Metadata:
    """grpc.aio.Metadata (or None) as the tuple of pairs a servicer context takes."""
    return tuple(metadata or ())


async def _counted(requests: AsyncIterator[bytes], record: CallRecord) -> AsyncIterator[bytes]:
    async for message in requests:
        record.request_bytes += len(message)
        yield message


class Proxy(GenericRpcHandler):
    """Hands grpc.aio a forwarding handler for every method of a routed service.

    Any other method is UNIMPLEMENTED, with no upstream called, except health
    and reflection: grpc.aio may ask this handler before theirs, and it
    answers None so that theirs serve them.
    """

    def __init__(
        self,
        routes: Sequence[Route],
        channels: Channels,
        gate: Gate,
        access_log: AccessLog,
        shapes: ShapeLookup = contract_shapes,
        intercepted: bool = False,
    ) -> None:
        """`intercepted`: the channels have client interceptors, the last of
        them `capture_interceptors` (see `gateway.cancellation`)."""
        self._intercepted = intercepted
        self._channels = channels
        self._gate = gate
        self._access_log = access_log
        self._handlers: dict[str, Handler] = {}  # "/pkg.Service/Method" -> handler
        self._routes: dict[str, Route] = {}  # "pkg.Service" -> route
        for route in routes:
            self._routes[route.service] = route
            for name, shape in (shapes(route.service) or {}).items():
                method = f"/{route.service}/{name}"
                self._handlers[method] = self._forwarder(method, route).handler(shape)

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> Handler | None:
        method = handler_call_details.method
        handler = self._handlers.get(method)
        if handler is not None:
            return handler
        service = method[1:].rpartition("/")[0]
        route = self._routes.get(service)
        if route is not None:
            # A method its descriptor does not list (or no descriptor at all):
            # the upstream decides whether it exists.
            handler = self._forwarder(method, route).handler(None)
            if len(self._handlers) < MAX_CACHED_HANDLERS:
                self._handlers[method] = handler
            return handler
        if is_infrastructure(method):
            return None  # e.g. reflection v1, which clients probe before v1alpha
        return self._unrouted(method, service)

    def _forwarder(self, method: str, route: Route) -> _Forwarder:
        return _Forwarder(
            method, route, self._channels, self._gate, self._access_log, self._intercepted
        )

    def _unrouted(self, method: str, service: str) -> Handler:
        access_log = self._access_log

        async def refuse(requests: AsyncIterator[bytes], context: Context) -> AsyncIterator[bytes]:
            record = CallRecord(method, None)
            record.peer = context.peer()
            record.code = grpc.StatusCode.UNIMPLEMENTED
            try:
                await context.abort(
                    grpc.StatusCode.UNIMPLEMENTED, f"{service or method} is not served here"
                )
            finally:
                access_log.write_soon(record)
            yield b""  # never reached: abort raises; this makes an async generator

        return grpc.stream_stream_rpc_method_handler(refuse)
