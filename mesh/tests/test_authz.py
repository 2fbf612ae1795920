"""Authorization over mTLS against the real catalog server: who may call what.

The matrix: a plaintext client, a certificate from a rogue CA and an expired
one are refused at the handshake (UNAVAILABLE); valid certificates of callers
the policy does not name for a method get PERMISSION_DENIED naming the caller
and the method; only the allowed pairs succeed. Health is open to any valid
certificate; the gateway's customer header is refused from anyone else.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from mesh.authz import Authorization, denial
from mesh.identity import SUBJECT_HEADER
from mesh.policy import DEFAULT_POLICY_FILE, load_policy
from shop.catalog.v1 import catalog_pb2, catalog_pb2_grpc

if TYPE_CHECKING:
    from mesh.tests.conftest import Certs, MtlsCatalog

TIMEOUT = 10.0
LIST = "/shop.catalog.v1.CatalogService/ListProducts"
GET = "/shop.catalog.v1.CatalogService/GetProduct"


async def _call(channel: grpc.aio.Channel, method: str, metadata: Any = None) -> grpc.StatusCode:
    """Calls `method` of the catalog; the status code it ends with."""
    stub: Any = catalog_pb2_grpc.CatalogServiceStub(channel)
    try:
        if method == LIST:
            await stub.ListProducts(
                catalog_pb2.ListProductsRequest(page_size=1), timeout=TIMEOUT, metadata=metadata
            )
        else:
            await stub.GetProduct(
                catalog_pb2.GetProductRequest(id="nope"), timeout=TIMEOUT, metadata=metadata
            )
    except grpc.aio.AioRpcError as error:
        return error.code()
    return grpc.StatusCode.OK


def _channel(catalog: MtlsCatalog, certs: Certs, caller: str) -> grpc.aio.Channel:
    """A channel presenting `caller`'s certificate (`plaintext`, `rogue`,
    `expired` or a service name)."""
    if caller == "plaintext":
        return catalog.dial(None, None, None)
    if caller == "rogue":
        return catalog.dial(
            certs.bad.rogue_key.read_bytes(), certs.bad.rogue_cert.read_bytes(), certs.ca()
        )
    if caller == "expired":
        return catalog.dial(
            certs.bad.expired_key.read_bytes(), certs.bad.expired_cert.read_bytes(), certs.ca()
        )
    key, cert = certs.pair(caller)
    return catalog.dial(key, cert, certs.ca())


# GetProduct of an unknown id is NOT_FOUND: the call got through to the catalog.
THROUGH = (grpc.StatusCode.OK, grpc.StatusCode.NOT_FOUND)
MATRIX = [
    ("plaintext", LIST, "handshake"),
    ("plaintext", GET, "handshake"),
    ("rogue", LIST, "handshake"),
    ("rogue", GET, "handshake"),
    ("expired", LIST, "handshake"),
    ("expired", GET, "handshake"),
    ("payments", LIST, "denied"),
    ("payments", GET, "denied"),
    ("inventory", GET, "denied"),
    ("notifications", GET, "denied"),
    ("catalog", GET, "denied"),
    ("orders", LIST, "denied"),
    ("orders", GET, "allowed"),
    ("gateway", LIST, "allowed"),
    ("gateway", GET, "allowed"),
]


@pytest.mark.parametrize(("caller", "method", "outcome"), MATRIX)
async def test_only_the_callers_the_policy_names_get_through(
    mtls_catalog: MtlsCatalog, certs: Certs, caller: str, method: str, outcome: str
) -> None:
    async with _channel(mtls_catalog, certs, caller) as channel:
        stub: Any = catalog_pb2_grpc.CatalogServiceStub(channel)
        request: Any = (
            catalog_pb2.ListProductsRequest(page_size=1)
            if method == LIST
            else catalog_pb2.GetProductRequest(id="nope")
        )
        call = stub.ListProducts if method == LIST else stub.GetProduct
        try:
            await call(request, timeout=TIMEOUT)
            code, details = grpc.StatusCode.OK, ""
        except grpc.aio.AioRpcError as error:
            code, details = error.code(), error.details() or ""
    if outcome == "handshake":
        assert code == grpc.StatusCode.UNAVAILABLE
    elif outcome == "denied":
        assert code == grpc.StatusCode.PERMISSION_DENIED
        assert f"spiffe://shop.local/{caller}" in details
        assert method in details
    else:
        assert code in THROUGH, details


@pytest.mark.parametrize("caller", ["payments", "inventory", "orders", "gateway", "catalog"])
async def test_health_is_open_to_every_valid_certificate(
    mtls_catalog: MtlsCatalog, certs: Certs, caller: str
) -> None:
    async with _channel(mtls_catalog, certs, caller) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        reply = await stub.Check(health_pb2.HealthCheckRequest(), timeout=TIMEOUT)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


async def test_reflection_is_closed_where_the_policy_does_not_list_it(
    mtls_catalog: MtlsCatalog, certs: Certs
) -> None:
    async with _channel(mtls_catalog, certs, "gateway") as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            async for _ in stub.ServerReflectionInfo(iter([request]), timeout=TIMEOUT):
                pass
    assert raised.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "ServerReflection" in (raised.value.details() or "")


async def test_a_denied_call_is_logged_and_marks_the_server_span(
    mtls_catalog: MtlsCatalog, certs: Certs, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="mesh.authz"):
        async with _channel(mtls_catalog, certs, "payments") as channel:
            assert await _call(channel, LIST) == grpc.StatusCode.PERMISSION_DENIED
    (record,) = [r for r in caplog.records if r.name == "mesh.authz"]
    assert "spiffe://shop.local/payments" in record.getMessage()
    assert record.__dict__["caller"] == "spiffe://shop.local/payments"
    assert record.__dict__["method"] == LIST
    (span,) = [s for s in mtls_catalog.exporter.get_finished_spans() if s.name.endswith(LIST)]
    assert span.status.status_code.name == "ERROR"
    assert "spiffe://shop.local/payments" in (span.status.description or "")
    attributes = dict(span.attributes or {})
    assert attributes["mesh.authz.denied"] is True
    assert attributes["mesh.authz.caller"] == "spiffe://shop.local/payments"
    assert attributes["rpc.grpc.status_code"] == grpc.StatusCode.PERMISSION_DENIED.value[0]


async def test_an_allowed_call_leaves_the_span_alone(
    mtls_catalog: MtlsCatalog, certs: Certs
) -> None:
    async with _channel(mtls_catalog, certs, "gateway") as channel:
        assert await _call(channel, LIST) == grpc.StatusCode.OK
    (span,) = [s for s in mtls_catalog.exporter.get_finished_spans() if s.name.endswith(LIST)]
    assert span.status.status_code.name != "ERROR"
    assert "mesh.authz.denied" not in dict(span.attributes or {})


async def test_the_customer_header_is_refused_from_anyone_but_the_gateway(
    mtls_catalog: MtlsCatalog, certs: Certs
) -> None:
    forged = ((SUBJECT_HEADER, "cus-victim"),)
    async with _channel(mtls_catalog, certs, "orders") as channel:
        assert await _call(channel, GET) == grpc.StatusCode.NOT_FOUND  # allowed without it
        stub: Any = catalog_pb2_grpc.CatalogServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await stub.GetProduct(
                catalog_pb2.GetProductRequest(id="nope"), timeout=TIMEOUT, metadata=forged
            )
    assert raised.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert SUBJECT_HEADER in (raised.value.details() or "")
    assert "spiffe://shop.local/orders" in (raised.value.details() or "")
    async with _channel(mtls_catalog, certs, "gateway") as channel:
        assert await _call(channel, GET, forged) == grpc.StatusCode.NOT_FOUND


def test_denial_without_an_identity_says_so() -> None:
    policy = load_policy(DEFAULT_POLICY_FILE)
    reason = denial(
        policy, "inventory", None, "/shop.inventory.v1.InventoryService/ReserveStock", ()
    )
    assert reason is not None
    assert "caller no identity may not call" in reason
    assert "/shop.inventory.v1.InventoryService/ReserveStock" in reason
    assert denial(policy, "inventory", None, "/grpc.health.v1.Health/Check", ()) is None


def test_authorization_is_for_one_of_the_shops_services() -> None:
    with pytest.raises(ValueError, match="shop's services"):
        Authorization(load_policy(DEFAULT_POLICY_FILE), "billing")


async def test_health_stays_open_whatever_the_metadata(
    mtls_catalog: MtlsCatalog, certs: Certs
) -> None:
    async with _channel(mtls_catalog, certs, "payments") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        reply = await stub.Check(
            health_pb2.HealthCheckRequest(), timeout=TIMEOUT, metadata=((SUBJECT_HEADER, "x"),)
        )
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


# Every RPC shape, under the catalog's service name: Authorization must stand
# in front of each, or a streaming method would be a way around the policy.
SHAPES = ("Unary", "ServerStream", "ClientStream", "Bidi")
CATALOG = "shop.catalog.v1.CatalogService"


def _shaped_handlers(reached: list[str]) -> grpc.GenericRpcHandler[Any, Any]:
    async def unary(request: bytes, context: Any) -> bytes:
        reached.append("Unary")
        return request

    async def server_stream(request: bytes, context: Any) -> Any:
        reached.append("ServerStream")
        yield request

    async def client_stream(requests: Any, context: Any) -> bytes:
        reached.append("ClientStream")
        return b"".join([r async for r in requests])

    async def bidi(requests: Any, context: Any) -> Any:
        reached.append("Bidi")
        async for request in requests:
            yield request

    return grpc.method_handlers_generic_handler(
        CATALOG,
        {
            "Unary": grpc.unary_unary_rpc_method_handler(unary),
            "ServerStream": grpc.unary_stream_rpc_method_handler(server_stream),
            "ClientStream": grpc.stream_unary_rpc_method_handler(client_stream),
            "Bidi": grpc.stream_stream_rpc_method_handler(bidi),
        },
    )


async def _shape_code(channel: grpc.aio.Channel, shape: str) -> grpc.StatusCode:
    method = f"/{CATALOG}/{shape}"
    try:
        if shape == "Unary":
            await channel.unary_unary(method, None, None)(b"x", timeout=TIMEOUT)
        elif shape == "ServerStream":
            _ = [r async for r in channel.unary_stream(method, None, None)(b"x", timeout=TIMEOUT)]
        elif shape == "ClientStream":
            await channel.stream_unary(method, None, None)(iter([b"x"]), timeout=TIMEOUT)
        else:
            _ = [
                r
                async for r in channel.stream_stream(method, None, None)(
                    iter([b"x"]), timeout=TIMEOUT
                )
            ]
    except grpc.aio.AioRpcError as error:
        return error.code()
    return grpc.StatusCode.OK


@pytest.mark.parametrize("guarded", [True, False], ids=["authorization", "control-without"])
async def test_every_rpc_shape_is_refused_before_its_handler_runs(guarded: bool) -> None:
    reached: list[str] = []
    interceptors = [Authorization(load_policy(DEFAULT_POLICY_FILE), "catalog")] if guarded else []
    server = grpc.aio.server(interceptors=interceptors)
    server.add_generic_rpc_handlers([_shaped_handlers(reached)])
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            codes = {shape: await _shape_code(channel, shape) for shape in SHAPES}
    finally:
        await server.stop(None)

    # A plaintext caller has no identity: the policy allows it nothing but health.
    if guarded:
        assert codes == dict.fromkeys(SHAPES, grpc.StatusCode.PERMISSION_DENIED)
        assert reached == []
    else:
        assert codes == dict.fromkeys(SHAPES, grpc.StatusCode.OK)
        assert sorted(reached) == sorted(SHAPES)
