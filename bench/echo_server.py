"""`python -m bench.echo_server --listen HOST:PORT`: the floor a Python grpc.aio service reaches.

One generic handler serves `/bench.v1.Echo/Echo` and returns the request's
bytes as they came (no proto, nothing decoded); any other method is
UNIMPLEMENTED, as grpc.aio answers when no handler takes it. Nothing else:
no interceptors, health, reflection, metrics or tracing, and the default
asyncio loop, as the services run. `bench.anchors` measures every call of
the shop as a ratio to this one; it checks readiness with an Echo call, since
there is no health service to ask.
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
else:  # grpcio's classes are not generic at run time, only in grpc-stubs.
    Context = grpc.aio.ServicerContext
    Handler = grpc.RpcMethodHandler
    GenericRpcHandler = grpc.GenericRpcHandler

__all__ = ["ECHO_METHOD", "Echo", "main", "serve"]

ECHO_METHOD = "/bench.v1.Echo/Echo"


async def _echo(request: bytes, context: Context) -> bytes:
    return request


class Echo(GenericRpcHandler):
    """Takes ECHO_METHOD and nothing else; the handler is made once, not per call."""

    def __init__(self) -> None:
        self._handler: Handler = grpc.unary_unary_rpc_method_handler(_echo)

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> Handler | None:
        return self._handler if handler_call_details.method == ECHO_METHOD else None


async def serve(listen: str) -> None:
    # No SO_REUSEPORT: binding a port that another process holds fails.
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    server.add_generic_rpc_handlers((Echo(),))
    server.add_insecure_port(listen)  # raises RuntimeError if the port is taken
    await server.start()
    await server.wait_for_termination()  # until SIGTERM ends the process


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.echo_server", description=__doc__)
    parser.add_argument("--listen", required=True, help="HOST:PORT to serve on")
    args = parser.parse_args(argv)
    asyncio.run(serve(args.listen))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
