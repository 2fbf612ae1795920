"""What the gateway knows of a routed service's contract: its methods' shapes.

The proxy never decodes a message, but the shape of each method (is the
request a stream, is the response) picks the cheapest handler: grpc.aio's
unary-unary path costs a fraction of a bidirectional stream's. Shapes come
from the protobuf default descriptor pool, filled by importing the generated
module of a routed `shop.*` service by the repository's convention (package
`shop.<name>.v<N>`, one file `<name>.proto`, so `shop.<name>.v<N>.<name>_pb2`).
That import also lets server reflection, which reads the same pool, describe
the service through the gateway.

A service the pool does not know (an operator's own upstream) is still
proxied, as bidirectional streams: on the wire all four shapes are a stream
of messages each way, so that handler carries any of them.
"""

from __future__ import annotations

import contextlib
import importlib
import re
from collections.abc import Mapping
from typing import NamedTuple

from google.protobuf import descriptor_pool

__all__ = ["Shape", "contract_shapes"]

_SHOP_PACKAGE = re.compile(r"shop\.([a-z0-9_]+)\.v[0-9]+")


class Shape(NamedTuple):
    request_streaming: bool
    response_streaming: bool


def contract_shapes(service: str) -> Mapping[str, Shape] | None:
    """Method name -> shape for `service` (fully qualified), None when unknown."""
    package = service.rpartition(".")[0]
    match = _SHOP_PACKAGE.fullmatch(package)
    if match is not None:
        # Not generated here: proxied without a descriptor.
        with contextlib.suppress(ModuleNotFoundError):
            importlib.import_module(f"{package}.{match.group(1)}_pb2")
    try:
        descriptor = descriptor_pool.Default().FindServiceByName(service)
    except KeyError:
        return None
    return {
        method.name: Shape(method.client_streaming, method.server_streaming)
        for method in descriptor.methods
    }
