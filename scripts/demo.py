"""A few catalog calls against the local mesh, each in its own trace.

Run by `make demo` after `make up`: prints every call's trace id with the
Jaeger query-API URL that shows it, then the span tree of one as Jaeger has
it. (Local mode's Jaeger, built from its Go module, has no web UI assets;
with the container image the same trace is at /trace/<id>.)
"""

from __future__ import annotations

import asyncio
import os
import sys

import grpc
from opentelemetry import trace

from localmode.topology import Topology
from shop.catalog.v1 import catalog_pb2, catalog_pb2_grpc
from tracing.interceptors import client_interceptors
from tracing.jaeger import JaegerError, has_span, wait_for_trace
from tracing.provider import configure_tracing
from tracing.tree import format_tree

UI_PORT = 16686


def _addresses() -> tuple[str, str, str]:
    ports = Topology.load().default_ports()
    return (
        f"127.0.0.1:{ports[('catalog', 50051)]}",
        f"http://127.0.0.1:{ports[('jaeger', 4317)]}",
        f"http://localhost:{ports[('jaeger', UI_PORT)]}",
    )


async def main() -> int:
    catalog, otlp, jaeger = _addresses()
    os.environ.setdefault("OTEL_EXPORTER_OTLP_ENDPOINT", otlp)
    os.environ.setdefault("OTEL_EXPORTER_OTLP_INSECURE", "true")
    telemetry = configure_tracing("demo-client", "0.1.0")
    tracer = trace.get_tracer("demo")
    calls = [
        ("ListProducts", catalog_pb2.ListProductsRequest(page_size=3)),
        ("SearchProducts", catalog_pb2.SearchProductsRequest(query="espresso", page_size=3)),
        ("GetProduct", catalog_pb2.GetProductRequest(id="prod-chemex")),
        ("GetProduct", catalog_pb2.GetProductRequest(id="prod-does-not-exist")),
    ]
    trace_ids = []
    async with grpc.aio.insecure_channel(catalog, interceptors=client_interceptors()) as channel:
        stub = catalog_pb2_grpc.CatalogServiceStub(channel)
        for method, request in calls:
            with tracer.start_as_current_span(f"demo {method}") as span:
                trace_id = format(span.get_span_context().trace_id, "032x")
                try:
                    reply = await getattr(stub, method)(request, timeout=5)
                    outcome = _summary(reply)
                except grpc.aio.AioRpcError as error:
                    outcome = f"{error.code().name}: {error.details()}"
            trace_ids.append(trace_id)
            print(f"{method:<15} {outcome}")
            print(f"{'':<15} trace {trace_id}: {jaeger}/api/v3/traces/{trace_id}")
            print(f"{'':<15} as a tree: make trace ID={trace_id}")
    telemetry.shutdown()  # flushes the client spans
    try:
        last = wait_for_trace(
            trace_ids[-2], timeout_s=20, predicate=has_span("catalog"), base_url=jaeger
        )
    except (TimeoutError, JaegerError) as error:
        print(f"could not fetch the trace from Jaeger: {error}", file=sys.stderr)
        return 1
    print(f"\nThe GetProduct trace as Jaeger stores it (python -m tracing {trace_ids[-2]}):")
    print(format_tree(last))
    return 0


def _summary(reply: object) -> str:
    products = getattr(reply, "products", None)
    if products is not None:
        return "OK: " + ", ".join(p.id for p in products)
    product = getattr(reply, "product", None)
    return f"OK: {product.name if product else reply}"


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
