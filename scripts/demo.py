"""Calls to the local mesh in Python, Go and TypeScript, each in its own trace.

Run by `make demo` after `make up`: a few catalog calls, then one "check
stock and pay" that crosses catalog (Python), inventory (Go) and payments
(TypeScript) in one trace. Prints every call's trace id with the Jaeger
query-API URL that shows it, then the span tree of the cross-language one as
Jaeger has it. (Local mode's Jaeger, built from its Go module, has no web UI assets;
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
from shop.common.v1.common_pb2 import Money
from shop.inventory.v1 import inventory_pb2, inventory_pb2_grpc
from shop.payments.v1 import payments_pb2, payments_pb2_grpc
from tracing.interceptors import client_interceptors
from tracing.jaeger import JaegerError, has_span, wait_for_trace
from tracing.provider import configure_tracing
from tracing.tree import format_tree

UI_PORT = 16686


def _addresses() -> tuple[str, str, str, str, str]:
    ports = Topology.load().default_ports()
    return (
        f"127.0.0.1:{ports[('catalog', 50051)]}",
        f"127.0.0.1:{ports[('inventory', 50053)]}",
        f"127.0.0.1:{ports[('payments', 50054)]}",
        f"http://127.0.0.1:{ports[('jaeger', 4317)]}",
        f"http://localhost:{ports[('jaeger', UI_PORT)]}",
    )


def _print_trace(label: str, outcome: str, trace_id: str, jaeger: str) -> None:
    print(f"{label:<15} {outcome}")
    print(f"{'':<15} trace {trace_id}: {jaeger}/api/v3/traces/{trace_id}")
    print(f"{'':<15} as a tree: make trace ID={trace_id}")


async def _check_stock_and_pay(
    catalog: grpc.aio.Channel, inventory: grpc.aio.Channel, payments: grpc.aio.Channel
) -> str:
    """One trace across three languages: price (Python), stock (Go), charge (TypeScript)."""
    product = await catalog_pb2_grpc.CatalogServiceStub(catalog).GetProduct(
        catalog_pb2.GetProductRequest(id="prod-chemex"), timeout=5
    )
    stock = await inventory_pb2_grpc.InventoryServiceStub(inventory).GetStock(
        inventory_pb2.GetStockRequest(product_ids=["prod-chemex"]), timeout=5
    )
    card = payments_pb2.Card(
        number="4242424242424242", expiry_month=12, expiry_year=2034, cvc="123"
    )
    charge = await payments_pb2_grpc.PaymentsServiceStub(payments).Charge(
        payments_pb2.ChargeRequest(
            idempotency_key="demo-chemex",
            order_id="demo-order",
            amount=Money(currency_code="EUR", amount_minor=product.product.price.amount_minor),
            card=card,
        ),
        timeout=5,
    )
    status = payments_pb2.PaymentStatus.Name(charge.payment.status)
    return (
        f"OK: {product.product.name}, {stock.stock_levels[0].available} in stock, "
        f"{status} {charge.payment.id}"
    )


async def main() -> int:
    catalog, inventory, payments, otlp, jaeger = _addresses()
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
    interceptors = client_interceptors()
    async with (
        grpc.aio.insecure_channel(catalog, interceptors=interceptors) as catalog_channel,
        grpc.aio.insecure_channel(inventory, interceptors=interceptors) as inventory_channel,
        grpc.aio.insecure_channel(payments, interceptors=interceptors) as payments_channel,
    ):
        stub = catalog_pb2_grpc.CatalogServiceStub(catalog_channel)
        for method, request in calls:
            with tracer.start_as_current_span(f"demo {method}") as span:
                trace_id = format(span.get_span_context().trace_id, "032x")
                try:
                    reply = await getattr(stub, method)(request, timeout=5)
                    outcome = _summary(reply)
                except grpc.aio.AioRpcError as error:
                    outcome = f"{error.code().name}: {error.details()}"
            trace_ids.append(trace_id)
            _print_trace(method, outcome, trace_id, jaeger)
        with tracer.start_as_current_span("demo check stock and pay") as span:
            trace_id = format(span.get_span_context().trace_id, "032x")
            try:
                outcome = await _check_stock_and_pay(
                    catalog_channel, inventory_channel, payments_channel
                )
            except grpc.aio.AioRpcError as error:
                outcome = f"{error.code().name}: {error.details()}"
        trace_ids.append(trace_id)
        _print_trace("Stock and pay", outcome, trace_id, jaeger)
    telemetry.shutdown()  # flushes the client spans
    try:
        last = wait_for_trace(
            trace_ids[-1], timeout_s=20, predicate=has_span("payments"), base_url=jaeger
        )
    except (TimeoutError, JaegerError) as error:
        print(f"could not fetch the trace from Jaeger: {error}", file=sys.stderr)
        return 1
    print(f"\nOne trace, three languages, as Jaeger stores it (python -m tracing {trace_ids[-1]}):")
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
