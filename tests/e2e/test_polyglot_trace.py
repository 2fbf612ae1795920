"""End to end with the real Jaeger: one Python trace continues in Go and in Node.

A Python client opens a span, calls inventory (Go) and payments (TypeScript)
through OpenTelemetry's client interceptors, and exports its own spans to the
same Jaeger. The trace fetched from Jaeger's query API must hold each
service's server span as the child of the client span that called it, with
the gRPC status code attribute, so the tree is whole across three languages.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import grpc
import pytest
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import TracerProvider

from localmode.topology import LocalService
from shop.common.v1.common_pb2 import Money
from shop.inventory.v1 import inventory_pb2, inventory_pb2_grpc
from shop.payments.v1 import payments_pb2, payments_pb2_grpc
from tests.conftest import JAEGER, require_tool
from tracing.interceptors import client_interceptors
from tracing.jaeger import Span, Trace, wait_for_trace
from tracing.provider import build_tracer_provider

pytestmark = pytest.mark.e2e

StartStack = Callable[..., dict[str, LocalService]]
FAST_EXPORT = {"OTEL_BSP_SCHEDULE_DELAY": "200"}


@dataclass(frozen=True)
class Edge:
    """A client span of the test calling `rpc`, parent of `service`'s server span."""

    service: str
    rpc: str  # package.Service/Method
    code: int  # rpc.grpc.status_code on the server span


EDGES = [
    Edge("inventory", "shop.inventory.v1.InventoryService/GetStock", 0),
    Edge("inventory", "shop.inventory.v1.InventoryService/ReserveStock", 0),
    Edge("inventory", "shop.inventory.v1.InventoryService/CommitStock", 5),  # NOT_FOUND
    Edge("payments", "shop.payments.v1.PaymentsService/Charge", 0),
    Edge("payments", "shop.payments.v1.PaymentsService/GetPayment", 3),  # INVALID_ARGUMENT
]


@pytest.fixture
def mesh(start_stack: StartStack, tmp_path: Path) -> dict[str, LocalService]:
    require_tool(JAEGER)
    env = {
        "inventory": FAST_EXPORT,
        "payments": {**FAST_EXPORT, "PAYMENTS_DB_PATH": str(tmp_path / "payments.db")},
    }
    return start_stack(["jaeger", "inventory", "payments"], env=env)


@pytest.fixture
def provider(mesh: dict[str, LocalService]) -> Iterator[TracerProvider]:
    otlp = f"127.0.0.1:{mesh['jaeger'].ports[4317]}"
    provider = build_tracer_provider(
        "e2e-client", "test", exporter=OTLPSpanExporter(endpoint=otlp, insecure=True)
    )
    yield provider
    provider.shutdown()


async def call_everything(mesh: dict[str, LocalService], provider: TracerProvider) -> str:
    """Makes the calls of EDGES inside one root span; returns its trace id."""
    inventory, payments = mesh["inventory"].grpc_target, mesh["payments"].grpc_target
    assert inventory is not None
    assert payments is not None
    interceptors = client_interceptors(provider)
    tracer = provider.get_tracer("e2e")
    with tracer.start_as_current_span("checkout") as root:
        async with grpc.aio.insecure_channel(inventory, interceptors=interceptors) as channel:
            stock = inventory_pb2_grpc.InventoryServiceStub(channel)
            await stock.GetStock(inventory_pb2.GetStockRequest(product_ids=["prod-chemex"]))
            line = inventory_pb2.ReservationLine(product_id="prod-chemex", quantity=1)
            await stock.ReserveStock(
                inventory_pb2.ReserveStockRequest(order_id="order-e2e", lines=[line])
            )
            with pytest.raises(grpc.aio.AioRpcError):
                await stock.CommitStock(inventory_pb2.CommitStockRequest(order_id="nope"))
        async with grpc.aio.insecure_channel(payments, interceptors=interceptors) as channel:
            pay = payments_pb2_grpc.PaymentsServiceStub(channel)
            card = payments_pb2.Card(
                number="4242424242424242",
                expiry_month=12,
                expiry_year=datetime.now(UTC).year + 1,
                cvc="123",
            )
            await pay.Charge(
                payments_pb2.ChargeRequest(
                    idempotency_key="e2e",
                    order_id="order-e2e",
                    amount=Money(currency_code="EUR", amount_minor=4950),
                    card=card,
                )
            )
            with pytest.raises(grpc.aio.AioRpcError):
                await pay.GetPayment(payments_pb2.GetPaymentRequest(id=""))
    assert provider.force_flush(10_000)
    return trace.format_trace_id(root.get_span_context().trace_id)


def server_spans(found: Trace, edge: Edge) -> list[Span]:
    """Each language's instrumentation names spans its own way (Python
    `/pkg.Service/Method`, Go `pkg.Service/Method`, Node
    `grpc.pkg.Service/Method`); all end with the full method name."""
    return [
        s
        for s in found.spans
        if s.service == edge.service and s.kind == "SERVER" and s.operation.endswith(edge.rpc)
    ]


def whole(found: Trace) -> bool:
    return all(server_spans(found, edge) for edge in EDGES)


async def test_one_trace_across_python_go_and_node(
    mesh: dict[str, LocalService], provider: TracerProvider
) -> None:
    trace_id = await call_everything(mesh, provider)
    base_url = f"http://127.0.0.1:{mesh['jaeger'].ports[16686]}"
    found = wait_for_trace(trace_id, timeout_s=30, predicate=whole, base_url=base_url)
    root = next(s for s in found.spans if s.operation == "checkout")
    for edge in EDGES:
        spans = server_spans(found, edge)
        assert len(spans) == 1, f"{edge}: expected one server span, got {spans}"
        span = spans[0]
        assert span.attributes.get("rpc.grpc.status_code") == edge.code, (edge, span.attributes)
        assert span.parent_span_id is not None, edge
        caller = found.span(span.parent_span_id)
        assert caller is not None, f"{edge}: the parent span is not in the trace"
        assert (caller.service, caller.kind) == ("e2e-client", "CLIENT"), edge
        assert caller.parent_span_id == root.span_id, edge
