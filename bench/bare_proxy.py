"""`python -m bench.bare_proxy --listen HOST:PORT --upstream HOST:PORT`: the floor for a gateway.

The least a Python grpc.aio gateway can do: one generic handler that takes
every call, whatever its method, as unary, sends the request's bytes to the
upstream with the same method on one channel, and returns the response's
bytes. Nothing else: no metadata or deadline forwarded, no auth, rate limit,
access log, tracing or interceptors, no health or reflection service of its
own (a health check goes to the upstream like any call), and an upstream
error becomes the UNKNOWN that grpc.aio gives any handler that raises.
`bench.gateway` puts it beside our gateway, so that the results show how much
of what ours adds is grpc.aio receiving a call and making another.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import TYPE_CHECKING

import grpc

if TYPE_CHECKING:
    Context = grpc.aio.ServicerContext[bytes, bytes]
    Handler = grpc.RpcMethodHandler[bytes, bytes]
    GenericRpcHandler = grpc.GenericRpcHandler[bytes, bytes]
    UnaryCall = grpc.aio.UnaryUnaryMultiCallable[bytes, bytes]
else:  # grpcio's classes are not generic at run time, only in grpc-stubs.
    Context = grpc.aio.ServicerContext
    Handler = grpc.RpcMethodHandler
    GenericRpcHandler = grpc.GenericRpcHandler
    UnaryCall = grpc.aio.UnaryUnaryMultiCallable

__all__ = ["BareProxy", "main"]


class BareProxy(GenericRpcHandler):
    """One unary handler per method, each forwarding bytes on the same channel."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self._channel = channel
        self._handlers: dict[str, Handler] = {}

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> Handler:
        method = handler_call_details.method
        handler = self._handlers.get(method)
        if handler is None:
            handler = self._handlers[method] = self._forwarding(method)
        return handler

    def _forwarding(self, method: str) -> Handler:
        upstream: UnaryCall = self._channel.unary_unary(method, None, None)  # bytes as they are

        async def forward(request: bytes, context: Context) -> bytes:
            return await upstream(request)

        return grpc.unary_unary_rpc_method_handler(forward)


async def serve(listen: str, upstream: str) -> None:
    async with grpc.aio.insecure_channel(upstream) as channel:
        # No SO_REUSEPORT: binding a port that another process holds fails.
        server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
        server.add_generic_rpc_handlers((BareProxy(channel),))
        server.add_insecure_port(listen)
        await server.start()
        await server.wait_for_termination()  # until SIGTERM ends the process


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bare_proxy", description=__doc__)
    parser.add_argument("--listen", required=True, help="HOST:PORT to serve on")
    parser.add_argument("--upstream", required=True, help="HOST:PORT to forward every call to")
    args = parser.parse_args(argv)
    asyncio.run(serve(args.listen, args.upstream))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
