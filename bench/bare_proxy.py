"""`python -m bench.bare_proxy --listen H:P --upstream H:P [--sync]`: the floor for a gateway.

The least a Python gateway can do: one generic handler that takes every
call, whatever its method, as unary, sends the request's bytes to the
upstream with the same method on one channel, and returns the response's
bytes. Nothing else: no metadata or deadline forwarded, no auth, rate limit,
access log, tracing or interceptors, no health or reflection service of its
own (a health check goes to the upstream like any call), and an upstream
error becomes the UNKNOWN that grpcio gives any handler that raises.
`bench.gateway` puts it beside our gateway, so that the results show how much
of what ours adds is grpcio receiving a call and making another.

By default it is grpc.aio, as the shop's services are; `--sync` makes it
grpcio's other API (a thread pool server, a blocking channel), so that the
results show whether the older API would be the faster floor.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

import grpc

if TYPE_CHECKING:
    Context = grpc.aio.ServicerContext[bytes, bytes]
    SyncContext = grpc.ServicerContext
    Handler = grpc.RpcMethodHandler[bytes, bytes]
    GenericRpcHandler = grpc.GenericRpcHandler[bytes, bytes]
    UnaryCall = grpc.aio.UnaryUnaryMultiCallable[bytes, bytes]
    SyncUnaryCall = grpc.UnaryUnaryMultiCallable[bytes, bytes]
else:  # grpcio's classes are not generic at run time, only in grpc-stubs.
    Context = grpc.aio.ServicerContext
    SyncContext = grpc.ServicerContext
    Handler = grpc.RpcMethodHandler
    GenericRpcHandler = grpc.GenericRpcHandler
    UnaryCall = grpc.aio.UnaryUnaryMultiCallable
    SyncUnaryCall = grpc.UnaryUnaryMultiCallable

__all__ = ["BareProxy", "main", "serve", "serve_sync"]


# The sync server's threads: one per call in flight, for the 32 that
# bench.gateway sends at most (fewer would queue calls in the proxy).
SYNC_WORKERS = 64
Forwarding = Callable[[str], Handler]  # the handler that forwards one method


class BareProxy(GenericRpcHandler):
    """One unary handler per method, each forwarding bytes on the same channel."""

    def __init__(self, forwarding: Forwarding) -> None:
        self._forwarding = forwarding
        self._handlers: dict[str, Handler] = {}

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> Handler:
        method = handler_call_details.method
        handler = self._handlers.get(method)
        if handler is None:
            handler = self._handlers[method] = self._forwarding(method)
        return handler


def _aio_forwarding(channel: grpc.aio.Channel) -> Forwarding:
    def forwarding(method: str) -> Handler:
        upstream: UnaryCall = channel.unary_unary(method, None, None)  # bytes as they are

        async def forward(request: bytes, context: Context) -> bytes:
            return await upstream(request)

        return grpc.unary_unary_rpc_method_handler(forward)

    return forwarding


def _sync_forwarding(channel: grpc.Channel) -> Forwarding:
    def forwarding(method: str) -> Handler:
        upstream: SyncUnaryCall = channel.unary_unary(method, None, None)

        def forward(request: bytes, context: SyncContext) -> bytes:
            return upstream(request)

        return grpc.unary_unary_rpc_method_handler(forward)

    return forwarding


# No SO_REUSEPORT: binding a port that another process holds fails.
_OPTIONS = [("grpc.so_reuseport", 0)]


async def serve(listen: str, upstream: str) -> None:
    async with grpc.aio.insecure_channel(upstream) as channel:
        server = grpc.aio.server(options=_OPTIONS)
        server.add_generic_rpc_handlers((BareProxy(_aio_forwarding(channel)),))
        server.add_insecure_port(listen)
        await server.start()
        await server.wait_for_termination()  # until SIGTERM ends the process


def serve_sync(listen: str, upstream: str) -> None:
    with grpc.insecure_channel(upstream) as channel:
        server = grpc.server(ThreadPoolExecutor(max_workers=SYNC_WORKERS), options=_OPTIONS)
        server.add_generic_rpc_handlers((BareProxy(_sync_forwarding(channel)),))
        server.add_insecure_port(listen)
        server.start()
        server.wait_for_termination()  # until SIGTERM ends the process


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bare_proxy", description=__doc__)
    parser.add_argument("--listen", required=True, help="HOST:PORT to serve on")
    parser.add_argument("--upstream", required=True, help="HOST:PORT to forward every call to")
    parser.add_argument("--sync", action="store_true", help="grpcio's sync API, not grpc.aio")
    args = parser.parse_args(argv)
    if args.sync:
        serve_sync(args.listen, args.upstream)
    else:
        asyncio.run(serve(args.listen, args.upstream))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
