"""The gateway over real gRPC: `python -m gateway` processes in front of real upstreams.

Upstreams: the real catalog process, and a test-only `test.echo.v1.Echo`
(tests/contract/gateway_upstream.py) that records every call it receives, so
a test can check what crossed the gateway and that a refused call never did.
The gateway has no descriptor for Echo, so its calls take the generic
(bidirectional-stream) handler; catalog's take the unary one
(test_gateway_in_process.py covers the typed streaming handlers).

Three gateway processes per module: `gateway` (catalog, Echo and a dead
upstream; tracing on, exporting to the echo's OTLP sink), `public` (the
default routes file with every upstream pointed at the echo through
GATEWAY_UPSTREAM_<HOST>) and `limited` (a rate of 2 per second).
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import subprocess
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from pathlib import Path
from typing import Any

import grpc
import jwt
import pytest
from google.rpc import status_pb2
from grpc.aio import EOF  # type: ignore[attr-defined]  # not in grpc-stubs
from grpc_health.v1 import health_pb2, health_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

from gateway.contracts import Shape, contract_shapes
from localmode.processes import Stack, free_port
from localmode.topology import LocalService, Topology
from shop.catalog.v1 import catalog_pb2, catalog_pb2_grpc
from shop.notifications.v1 import notifications_pb2
from shop.orders.v1 import orders_pb2
from tests.conftest import GRPCURL, require_tool
from tests.contract.gateway_support import (
    API_KEY,
    BASE_ENV,
    CLIENT_OPTIONS,
    ECHO,
    FAILURE_DETAILS,
    TIMEOUT,
    EchoUpstream,
    MiB,
    bearer,
    echo_method,
    pairs,
    token,
    until,
    write_routes,
)

PUBLIC = {
    "shop.catalog.v1.CatalogService": catalog_pb2,
    "shop.orders.v1.OrdersService": orders_pb2,
    "shop.notifications.v1.NotificationsService": notifications_pb2,
}
KEYED = bearer(API_KEY)  # the metadata of a caller with the test's API key
INFRASTRUCTURE = {"grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"}


def unary(channel: grpc.aio.Channel) -> Any:
    return echo_method(channel, "Unary")


def gateway_service(name: str, run_dir: Path, env: Mapping[str, str]) -> LocalService:
    """`python -m gateway` as a local-mode process on a free port."""
    port = free_port()
    return LocalService(
        name=name,
        command=(".venv/bin/python", "-m", "gateway"),
        environment={**BASE_ENV, "GRPC_LISTEN_ADDR": f"127.0.0.1:{port}", **env},
        ready=f"grpc://127.0.0.1:{port}",
        ports={8080: port},
        run_dir=run_dir,
    )


# --- processes, once per module ----------------------------------------------


@pytest.fixture(scope="module")
def echo() -> Iterator[EchoUpstream]:
    upstream = EchoUpstream().start()
    yield upstream
    upstream.stop()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, echo: EchoUpstream) -> Iterator[Stack]:
    """The module's processes; stopped before the echo, which they export traces to."""
    stack = Stack(tmp_path_factory.mktemp("gateway-stack"))
    yield stack
    stack.stop()


@pytest.fixture(scope="module")
def catalog(stack: Stack) -> LocalService:
    topology = Topology.load()
    ports = {key: free_port() for key in topology.default_ports()}
    service = topology.resolve("catalog", ports, stack.run_dir)
    service = dataclasses.replace(
        service, environment={**service.environment, "OTEL_SDK_DISABLED": "true"}
    )
    stack.start(service)
    return service


@pytest.fixture(scope="module")
def dead_target() -> str:
    return f"127.0.0.1:{free_port()}"  # nothing listens there


@pytest.fixture(scope="module")
def gateway(
    stack: Stack, echo: EchoUpstream, catalog: LocalService, dead_target: str
) -> LocalService:
    assert catalog.grpc_target is not None
    routes = write_routes(
        stack.run_dir / "routes.yaml",
        [
            {"service": "shop.catalog.v1.CatalogService", "upstream": catalog.grpc_target,
             "auth": "none"},
            {"service": ECHO, "upstream": echo.target, "auth": "required"},
            {"service": "test.echo.v1.Dead", "upstream": dead_target, "auth": "none"},
        ],
    )  # fmt: skip
    service = gateway_service(
        "gateway",
        stack.run_dir,
        {
            "GATEWAY_ROUTES_FILE": str(routes),
            "GATEWAY_RATE_PER_SECOND": "0",
            # Tracing on, exported to the echo's OTLP sink.
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://{echo.target}",
            "OTEL_EXPORTER_OTLP_INSECURE": "true",
            "OTEL_BSP_SCHEDULE_DELAY": "100",
            "OTEL_EXPORTER_OTLP_TIMEOUT": "2",
        },
    )
    stack.start(service)
    return service


@pytest.fixture(scope="module")
def public(stack: Stack, echo: EchoUpstream) -> LocalService:
    """The default routes file, every upstream host pointed at the echo."""
    overrides = {
        f"GATEWAY_UPSTREAM_{host}": echo.target
        for host in ("CATALOG", "ORDERS", "NOTIFICATIONS", "INVENTORY", "PAYMENTS")
    }
    service = gateway_service("public", stack.run_dir, {**overrides, "OTEL_SDK_DISABLED": "true"})
    stack.start(service)
    return service


@pytest.fixture(scope="module")
def limited(stack: Stack, echo: EchoUpstream) -> LocalService:
    routes = write_routes(
        stack.run_dir / "limited-routes.yaml",
        [{"service": ECHO, "upstream": echo.target, "auth": "none"}],
    )
    env = {
        "GATEWAY_ROUTES_FILE": str(routes),
        "GATEWAY_RATE_PER_SECOND": "2",
        "GATEWAY_RATE_BURST": "2",
        "OTEL_SDK_DISABLED": "true",
    }
    service = gateway_service("limited", stack.run_dir, env)
    stack.start(service)
    return service


async def connect(service: LocalService) -> grpc.aio.Channel:
    assert service.grpc_target is not None
    return grpc.aio.insecure_channel(service.grpc_target, options=CLIENT_OPTIONS)


@pytest.fixture
async def channel(gateway: LocalService) -> AsyncIterator[grpc.aio.Channel]:
    async with await connect(gateway) as channel:
        yield channel


# --- every shape through the generic handler ----------------------------------


async def test_unary(channel: grpc.aio.Channel, echo: EchoUpstream) -> None:
    call = unary(channel)(b"hello", metadata=KEYED, timeout=TIMEOUT)
    assert await call == b"hello"
    assert ("x-echo-initial", "1") in pairs(await call.initial_metadata())
    trailers = pairs(await call.trailing_metadata())
    assert ("x-echo-trailer", "t") in trailers
    assert ("x-echo-bin", b"\x00\xff") in trailers
    assert echo.calls(f"/{ECHO}/Unary")[-1].requests == [b"hello"]


async def test_server_streaming(channel: grpc.aio.Channel) -> None:
    call = channel.unary_stream(f"/{ECHO}/ServerStream", None, None)(
        b"s", metadata=KEYED, timeout=TIMEOUT
    )
    assert [message async for message in call] == [b"s#0", b"s#1", b"s#2"]
    assert await call.code() == grpc.StatusCode.OK


async def test_client_streaming(channel: grpc.aio.Channel) -> None:
    async def requests() -> AsyncIterator[bytes]:
        for part in (b"a", b"b", b"c"):
            yield part

    call = channel.stream_unary(f"/{ECHO}/ClientStream", None, None)
    assert await call(requests(), metadata=KEYED, timeout=TIMEOUT) == b"a|b|c"


async def test_bidirectional_streaming_interleaves(channel: grpc.aio.Channel) -> None:
    call = channel.stream_stream(f"/{ECHO}/Bidi", None, None)(  # type: ignore[call-arg]
        metadata=KEYED, timeout=TIMEOUT
    )
    for word in (b"one", b"two", b"three"):
        await call.write(word)
        assert await call.read() == b"echo:" + word  # each answer before the next request
    await call.done_writing()
    assert await call.read() == EOF
    assert await call.code() == grpc.StatusCode.OK


async def test_the_real_catalog_behind_the_gateway(channel: grpc.aio.Channel) -> None:
    stub = catalog_pb2_grpc.CatalogServiceStub(channel)
    reply = await stub.GetProduct(catalog_pb2.GetProductRequest(id="prod-chemex"), timeout=TIMEOUT)
    assert reply.product.name == "Chemex Six Cup Brewer"
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await stub.ListProducts(catalog_pb2.ListProductsRequest(page_size=-1), timeout=TIMEOUT)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (error.value.details() or "").startswith("page_size:")
    details = dict(pairs(error.value.trailing_metadata()))["grpc-status-details-bin"]
    assert "BadRequest" in status_pb2.Status.FromString(details).details[0].type_url


# --- metadata, status, deadline, cancellation ---------------------------------


async def test_request_metadata_goes_upstream_without_credentials(
    channel: grpc.aio.Channel, echo: EchoUpstream
) -> None:
    metadata = (
        ("x-client-note", "hello"),
        ("x-client-bin", b"\x01\x02"),
        ("x-shop-subject", "cus-someone-else"),  # a client's claim is never forwarded
        *bearer(API_KEY),
    )
    await unary(channel)(b"md", metadata=metadata, timeout=TIMEOUT)
    seen = echo.calls(f"/{ECHO}/Unary")[-1]
    assert seen.values("x-client-note") == ["hello"]
    assert seen.values("x-client-bin") == [b"\x01\x02"]
    assert seen.values("x-shop-subject") == ["cus-key"]
    assert seen.values("authorization") == []
    assert not any(API_KEY in str(value) for _, value in seen.metadata)


async def test_status_message_details_and_trailers_come_back_unchanged(
    channel: grpc.aio.Channel,
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await unary(channel)(b"fail", metadata=KEYED, timeout=TIMEOUT)
    assert error.value.code() == grpc.StatusCode.NOT_FOUND
    assert error.value.details() == "no such echo"
    assert ("x-echo-initial", "1") in pairs(error.value.initial_metadata())
    trailers = pairs(error.value.trailing_metadata())
    assert ("x-echo-trailer", "t") in trailers
    assert ("grpc-status-details-bin", FAILURE_DETAILS) in trailers


async def test_an_upstreams_own_unavailable_keeps_its_message(channel: grpc.aio.Channel) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await unary(channel)(b"unavailable", metadata=KEYED, timeout=TIMEOUT)
    assert error.value.code() == grpc.StatusCode.UNAVAILABLE
    assert error.value.details() == "echo is resting"


async def test_an_unreachable_upstream_is_unavailable_without_its_address(
    channel: grpc.aio.Channel, dead_target: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await channel.unary_unary("/test.echo.v1.Dead/Unary", None, None)(b"x", timeout=TIMEOUT)
    assert error.value.code() == grpc.StatusCode.UNAVAILABLE
    details = error.value.details() or ""
    assert details == "test.echo.v1.Dead is unavailable"
    port = dead_target.rpartition(":")[2]
    assert port not in details
    assert port not in (error.value.debug_error_string() or "")


async def test_the_deadline_goes_upstream(channel: grpc.aio.Channel, echo: EchoUpstream) -> None:
    started = time.monotonic()
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await echo_method(channel, "Slow")(b"zzz", metadata=KEYED, timeout=1.0)
    assert error.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert time.monotonic() - started < 5
    seen = echo.calls(f"/{ECHO}/Slow")[-1]
    assert seen.time_remaining is not None
    # grpc-timeout travels in coarse units and the clocks differ: a little slack.
    assert 0 < seen.time_remaining <= 1.0 + 0.1
    await until(lambda: seen.cancelled)  # the upstream stopped working on it too


async def test_a_client_cancellation_cancels_the_upstream_call(
    channel: grpc.aio.Channel, echo: EchoUpstream
) -> None:
    before = len(echo.calls(f"/{ECHO}/Slow"))
    call = echo_method(channel, "Slow")(b"cancel me", metadata=KEYED)  # no deadline
    calls = await until(lambda: echo.calls(f"/{ECHO}/Slow")[before:])
    assert calls[0].time_remaining is None
    call.cancel()
    await until(lambda: calls[0].cancelled)


async def test_a_cancelled_stream_cancels_the_upstream_stream(
    channel: grpc.aio.Channel, echo: EchoUpstream
) -> None:
    before = len(echo.calls(f"/{ECHO}/Bidi"))
    call = channel.stream_stream(f"/{ECHO}/Bidi", None, None)(  # type: ignore[call-arg]
        metadata=KEYED
    )
    await call.write(b"hold")
    assert await call.read() == b"echo:hold"
    call.cancel()
    seen = echo.calls(f"/{ECHO}/Bidi")[before]
    await until(lambda: seen.cancelled)


# --- message size -------------------------------------------------------------


async def test_a_3_mib_message_passes_both_ways(channel: grpc.aio.Channel) -> None:
    message = b"m" * (3 * MiB)
    assert await unary(channel)(message, metadata=KEYED, timeout=TIMEOUT) == (message)


async def test_a_5_mib_request_is_refused_before_the_upstream(
    channel: grpc.aio.Channel, echo: EchoUpstream
) -> None:
    before = echo.count()
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await unary(channel)(b"m" * (5 * MiB), metadata=KEYED, timeout=TIMEOUT)
    assert error.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert echo.count() == before


async def test_a_5_mib_response_is_refused(channel: grpc.aio.Channel) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await unary(channel)(b"big:%d" % (5 * MiB), metadata=KEYED, timeout=TIMEOUT)
    assert error.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


# --- authentication -------------------------------------------------------------


def _b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


_NOW = int(time.time())
REFUSED = {
    "no credential": ((), "this service requires authentication"),
    "not bearer": ((("authorization", f"Basic {API_KEY}"),), "'Bearer <token>'"),
    "malformed": (bearer("abc.def.ghi"), "malformed token"),
    "unknown key": (bearer("no-such-api-key-000000"), "unknown API key"),
    "wrong signature": (
        bearer(jwt.encode({"sub": "x"}, "another-key-that-is-32-bytes-long!", algorithm="HS256")),
        "token signature is invalid",
    ),
    "alg none": (
        bearer(f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64({'sub': 'cus-jwt'})}."),
        "token algorithm must be HS256",
    ),
    "expired": (bearer(token(iat=_NOW - 120, nbf=_NOW - 120, exp=_NOW - 60)), "token expired"),
    "not yet valid": (bearer(token(nbf=_NOW + 3600, exp=_NOW + 7200)), "token not yet valid"),
    "wrong audience": (bearer(token(aud="elsewhere")), "token has the wrong audience"),
    "wrong issuer": (bearer(token(iss="elsewhere")), "token has the wrong issuer"),
    "no subject": (bearer(token(sub=None)), "token has no 'sub' claim"),
}


@pytest.mark.parametrize("case", list(REFUSED))
async def test_bad_credentials_are_unauthenticated_before_any_upstream(
    channel: grpc.aio.Channel, echo: EchoUpstream, case: str
) -> None:
    metadata, message = REFUSED[case]
    before = echo.count()
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await unary(channel)(b"x", metadata=metadata, timeout=TIMEOUT)
    assert error.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert message in (error.value.details() or "")
    assert echo.count() == before


@pytest.mark.parametrize(("credential", "subject"), [("jwt", "cus-jwt"), ("api-key", "cus-key")])
async def test_a_valid_credential_sends_its_subject_upstream(
    channel: grpc.aio.Channel, echo: EchoUpstream, credential: str, subject: str
) -> None:
    secret = token() if credential == "jwt" else API_KEY
    assert await unary(channel)(b"me", metadata=bearer(secret), timeout=TIMEOUT) == b"me"
    assert echo.calls(f"/{ECHO}/Unary")[-1].values("x-shop-subject") == [subject]


async def test_an_open_route_takes_anonymous_callers_but_checks_a_credential(
    channel: grpc.aio.Channel,
) -> None:
    stub = catalog_pb2_grpc.CatalogServiceStub(channel)
    request = catalog_pb2.GetProductRequest(id="prod-chemex")
    await stub.GetProduct(request, timeout=TIMEOUT)
    await stub.GetProduct(request, metadata=bearer(token()), timeout=TIMEOUT)
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await stub.GetProduct(request, metadata=bearer(token(aud="x")), timeout=TIMEOUT)
    assert error.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_health_stays_open(channel: grpc.aio.Channel) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    for service in ("", ECHO, "shop.catalog.v1.CatalogService"):
        reply = await health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING


# --- routing: public, internal and unknown services -----------------------------


def _shape_call(channel: grpc.aio.Channel, method: str, shape: Shape) -> Any:
    kind = {
        Shape(False, False): channel.unary_unary,
        Shape(False, True): channel.unary_stream,
        Shape(True, False): channel.stream_unary,
        Shape(True, True): channel.stream_stream,
    }[shape]
    return kind(method, None, None)


@pytest.mark.parametrize("service", list(PUBLIC))
async def test_every_method_of_every_public_service_is_routed(
    public: LocalService, echo: EchoUpstream, service: str
) -> None:
    shapes = contract_shapes(service)
    assert shapes
    async with await connect(public) as channel:
        for name, shape in shapes.items():
            method = f"/{service}/{name}"
            payload = name.encode()
            call = _shape_call(channel, method, shape)
            if shape.request_streaming:

                async def one(payload: bytes = payload) -> AsyncIterator[bytes]:
                    yield payload

                reply = call(one(), metadata=KEYED, timeout=TIMEOUT)
            else:
                reply = call(payload, metadata=KEYED, timeout=TIMEOUT)
            if shape.response_streaming:
                assert [message async for message in reply] == [payload], method
            else:
                assert await reply == payload, method
            assert echo.calls(method)[-1].requests == [payload]


@pytest.mark.parametrize(
    ("service", "open_to_anonymous"),
    [
        ("shop.catalog.v1.CatalogService", True),
        ("shop.orders.v1.OrdersService", False),
        ("shop.notifications.v1.NotificationsService", False),
    ],
)
async def test_the_default_routes_ask_for_authentication(
    public: LocalService, service: str, open_to_anonymous: bool
) -> None:
    shapes = contract_shapes(service)
    assert shapes
    name = next(name for name, shape in shapes.items() if shape == Shape(False, False))
    async with await connect(public) as channel:
        call = channel.unary_unary(f"/{service}/{name}", None, None)(b"", timeout=TIMEOUT)
        if open_to_anonymous:
            assert await call == b""
        else:
            with pytest.raises(grpc.aio.AioRpcError) as error:
                await call
            assert error.value.code() == grpc.StatusCode.UNAUTHENTICATED


@pytest.mark.parametrize(
    "method",
    [
        "/shop.inventory.v1.InventoryService/ReserveStock",
        "/shop.inventory.v1.InventoryService/GetStock",
        "/shop.payments.v1.PaymentsService/Charge",
        "/shop.payments.v1.PaymentsService/Refund",
        "/no.such.v1.Service/Method",
        "/NoPackage/Method",
    ],
)
async def test_internal_and_unknown_services_are_unimplemented_and_never_reached(
    public: LocalService, echo: EchoUpstream, method: str
) -> None:
    before = echo.count()
    async with await connect(public) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await channel.unary_unary(method, None, None)(b"", metadata=KEYED, timeout=TIMEOUT)
    assert error.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert echo.count() == before, "the internal service's upstream was called"


# --- grpcurl: reflection and calls by name ----------------------------------------


def grpcurl(
    service: LocalService, *verb: str, flags: tuple[str, ...] = ()
) -> subprocess.CompletedProcess[str]:
    """`grpcurl -plaintext FLAGS TARGET VERB...` against a gateway."""
    assert service.grpc_target is not None
    command = [str(require_tool(GRPCURL)), "-plaintext", *flags, service.grpc_target, *verb]
    return subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)


def test_grpcurl_lists_exactly_the_public_services(public: LocalService) -> None:
    result = grpcurl(public, "list")
    assert result.returncode == 0, result.stderr
    assert set(result.stdout.split()) == set(PUBLIC) | INFRASTRUCTURE


def test_grpcurl_describes_a_service_and_a_message_through_the_gateway(
    public: LocalService,
) -> None:
    service = grpcurl(public, "describe", "shop.notifications.v1.NotificationsService")
    assert service.returncode == 0, service.stderr
    assert "rpc StreamNotifications" in service.stdout
    assert "returns ( stream .shop.notifications.v1.StreamNotificationsResponse )" in (
        service.stdout
    )
    message = grpcurl(public, "describe", "shop.catalog.v1.GetProductRequest")
    assert message.returncode == 0, message.stderr
    assert "string id = 1;" in message.stdout


def test_grpcurl_calls_the_catalog_by_name(gateway: LocalService) -> None:
    result = grpcurl(
        gateway, "shop.catalog.v1.CatalogService/GetProduct", flags=("-d", '{"id": "prod-chemex"}')
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["product"]["name"] == "Chemex Six Cup Brewer"


def test_grpcurl_with_and_without_a_token(public: LocalService) -> None:
    method = "shop.orders.v1.OrdersService/GetOrder"
    request = ("-d", "{}")
    refused = grpcurl(public, method, flags=request)
    assert refused.returncode != 0
    assert "Unauthenticated" in refused.stderr
    allowed = grpcurl(public, method, flags=("-H", f"authorization: Bearer {token()}", *request))
    # The echo answers the request's bytes, which grpcurl decodes as a
    # GetOrderResponse: the call went through, whatever it decoded to.
    assert allowed.returncode == 0, allowed.stderr


# --- rate limiting ------------------------------------------------------------------


async def test_over_the_rate_is_resource_exhausted_with_pushback_then_recovers(
    limited: LocalService, echo: EchoUpstream
) -> None:
    async with await connect(limited) as channel:
        call = unary(channel)
        # Empty the anonymous bucket: burst 2, refilled at 2/s meanwhile.
        for _ in range(20):
            try:
                await call(b"r", timeout=TIMEOUT)
            except grpc.aio.AioRpcError as error:
                refused = error
                break
        else:
            pytest.fail("20 calls in a row at a rate of 2/s were all let through")
        before = echo.count()
        assert refused.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "rate limit" in (refused.details() or "")
        pushback = int(dict(pairs(refused.trailing_metadata()))["grpc-retry-pushback-ms"])
        assert 0 < pushback <= 500  # one token every 500 ms
        with pytest.raises(grpc.aio.AioRpcError):
            await call(b"r", timeout=TIMEOUT)
        assert echo.count() == before, "a refused call reached the upstream"
        # Another identity has its own bucket.
        assert await call(b"k", metadata=KEYED, timeout=TIMEOUT) == b"k"
        await asyncio.sleep(0.55)
        assert await call(b"r", timeout=TIMEOUT) == b"r"


# --- access log and tracing -----------------------------------------------------------


def access_lines(stack: Stack, name: str) -> list[dict[str, Any]]:
    lines = []
    for line in stack.log_file(name).read_text().splitlines():
        if line.startswith("{"):
            entry = json.loads(line)
            if entry.get("logger") == "gateway.access":
                lines.append(entry)
    return lines


def exported_spans(echo: EchoUpstream) -> list[trace_pb2.Span]:
    spans: list[trace_pb2.Span] = []
    for raw in list(echo.exports):
        request = trace_service_pb2.ExportTraceServiceRequest.FromString(raw)
        for resource_spans in request.resource_spans:
            for scope_spans in resource_spans.scope_spans:
                spans.extend(scope_spans.spans)
    return spans


async def test_one_access_log_line_per_call_without_secrets(
    channel: grpc.aio.Channel, stack: Stack, echo: EchoUpstream
) -> None:
    jwt_token = token()
    await unary(channel)(b"logged", metadata=bearer(jwt_token), timeout=TIMEOUT)
    seen = echo.calls(f"/{ECHO}/Unary")[-1]
    trace_id = str(seen.values("traceparent")[0]).split("-")[1]
    with pytest.raises(grpc.aio.AioRpcError):
        await unary(channel)(b"x", metadata=bearer(API_KEY + "x"), timeout=TIMEOUT)

    entries = await until(
        lambda: [e for e in access_lines(stack, "gateway") if e.get("trace_id") == trace_id]
    )
    (entry,) = entries
    assert entry["method"] == f"/{ECHO}/Unary"
    assert entry["code"] == "OK"
    assert entry["identity"] == "cus-jwt"
    assert entry["credential"] == "jwt"
    assert entry["upstream"] == echo.target
    assert entry["request_bytes"] == entry["response_bytes"] == len(b"logged")
    assert entry["duration_ms"] > 0
    assert entry["time"]
    refused = await until(
        lambda: [e for e in access_lines(stack, "gateway") if e["code"] == "UNAUTHENTICATED"]
    )
    assert refused[-1]["identity"] is None
    log_text = stack.log_file("gateway").read_text()
    assert jwt_token not in log_text
    assert API_KEY not in log_text
    assert jwt_token.split(".")[2] not in log_text


async def test_the_gateway_span_is_the_root_or_continues_the_callers_trace(
    channel: grpc.aio.Channel, echo: EchoUpstream
) -> None:
    method = f"/{ECHO}/Unary"
    await unary(channel)(b"root", metadata=KEYED, timeout=TIMEOUT)
    upstream_parent = str(echo.calls(method)[-1].values("traceparent")[0]).split("-")
    trace_id = bytes.fromhex(upstream_parent[1])

    spans = await until(
        lambda: (
            len([s for s in exported_spans(echo) if s.trace_id == trace_id]) >= 2
            and [s for s in exported_spans(echo) if s.trace_id == trace_id]
        )
    )
    server = next(s for s in spans if s.kind == trace_pb2.Span.SPAN_KIND_SERVER)
    client = next(s for s in spans if s.kind == trace_pb2.Span.SPAN_KIND_CLIENT)
    assert server.name == client.name == method
    assert server.parent_span_id == b"", "no trace context came in: the gateway starts one"
    assert client.parent_span_id == server.span_id
    assert client.span_id.hex() == upstream_parent[2], "the upstream's parent is the client span"
    attributes = {a.key: a.value.string_value for a in server.attributes}
    assert attributes["enduser.id"] == "cus-key"
    assert not any(API_KEY in str(a.value) for s in spans for a in s.attributes)

    caller_trace, caller_span = "ab" * 16, "cd" * 8
    traceparent = (("traceparent", f"00-{caller_trace}-{caller_span}-01"),)
    await unary(channel)(b"child", metadata=(*traceparent, *bearer(API_KEY)), timeout=TIMEOUT)
    assert str(echo.calls(method)[-1].values("traceparent")[0]).split("-")[1] == caller_trace
    continued = await until(
        lambda: [
            s
            for s in exported_spans(echo)
            if s.trace_id.hex() == caller_trace and s.kind == trace_pb2.Span.SPAN_KIND_SERVER
        ]
    )
    assert continued[0].parent_span_id.hex() == caller_span
