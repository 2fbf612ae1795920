"""mTLS and the policy over real processes of all three languages: every
method of every service, called by every kind of caller.

The callers: no certificate (plaintext), a certificate from a rogue CA, an
expired certificate from the shop's CA, and a valid certificate of each of
the shop's six identities. A caller without a valid certificate must fail in
the handshake (UNAVAILABLE) whatever it calls; an identity must get exactly
what mesh/policy.yaml gives it: the calls the policy allows reach the
service's handler (which may still refuse the empty request as invalid), all
others get PERMISSION_DENIED naming the caller and the method. Health is open
to every valid certificate; reflection is closed, as the policy lists none
(a version of it that a service does not serve is UNIMPLEMENTED for all).

Each call sends an empty message, encoded by hand as zero bytes, so one loop
calls every method of every shape without the services' stubs. The control
run, with mTLS off, shows that the same calls reach every handler when
nothing guards them.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import pytest

from localmode.processes import Stack, free_port, start_all
from localmode.topology import LocalService, Topology
from mesh.certs import SERVICES, load, spiffe_id, write_bad_certificates
from mesh.config import Env
from mesh.policy import HEALTH_SERVICE, load_policy_from_env
from shop.catalog.v1 import catalog_pb2
from shop.inventory.v1 import inventory_pb2
from shop.notifications.v1 import notifications_pb2
from shop.orders.v1 import orders_pb2
from shop.payments.v1 import payments_pb2
from tests.conftest import MTLS_OFF, MTLS_ON
from tests.mesh_clients import certs_dir, credentials

pytestmark = pytest.mark.e2e

# The services that serve the mesh (the gateway's listener is public).
TARGETS = {
    "catalog": catalog_pb2,
    "orders": orders_pb2,
    "notifications": notifications_pb2,
    "inventory": inventory_pb2,
    "payments": payments_pb2,
}
STACK = ["nats", "catalog", "inventory", "payments", "orders", "notifications"]
QUIET = {"OTEL_SDK_DISABLED": "true", "LOG_LEVEL": "ERROR"}
# A denied call is answered as soon as its handler would start; an admitted
# stream may stay open (StreamNotifications), which counts as admitted.
CALL_TIMEOUT_S = 3.0

REFUSED_CERTIFICATES = {
    "rogue CA": ("rogue-orders", "rogue-ca"),
    "expired": ("expired-orders", "ca"),
}


@dataclass(frozen=True)
class Method:
    path: str  # /package.Service/Method
    client_streaming: bool
    server_streaming: bool


def methods_of(module: object) -> list[Method]:
    """Every RPC the service's contract declares, plus health and reflection."""
    found = [
        Method(f"/{service.full_name}/{m.name}", m.client_streaming, m.server_streaming)
        for service in module.DESCRIPTOR.services_by_name.values()  # type: ignore[attr-defined]
        for m in service.methods
    ]
    return [
        *found,
        Method(f"/{HEALTH_SERVICE}/Check", False, False),
        Method("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo", True, True),
        Method("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", True, True),
    ]


async def first_message(stream: Any) -> None:
    """Reads one message (or the end) of a response stream, then cancels it.
    Not `async for ...: break`: leaving the iterator cancels the call from
    inside its own read, which grpc.aio may surface as a CancelledError of the
    whole gather (seen in CI under load)."""
    try:
        await stream.read()
    finally:
        stream.cancel()


async def no_requests(call: Any) -> Any:
    """`call` (client-streaming, made without a request iterator) with its
    requests ended at once: what an empty iterator would do, but on the
    caller's side. Given `iter(())`, grpc.aio half-closes from a task of its
    own and cancels the whole call when that races the server ending it
    (a denial comes at once), so the caller sees a CancelledError instead of
    the status (seen in CI under load). Here a half-close the ended call
    refuses is let go: the read or await that follows reports its status."""
    with contextlib.suppress(Exception):
        await call.done_writing()
    return call


async def call(channel: grpc.aio.Channel, method: Method, identity: str) -> str:
    """What became of an empty request to `method` from `identity`."""
    try:
        if not method.client_streaming and not method.server_streaming:
            await channel.unary_unary(method.path, None, None)(b"", timeout=CALL_TIMEOUT_S)
        elif not method.client_streaming:
            await first_message(
                channel.unary_stream(method.path, None, None)(b"", timeout=CALL_TIMEOUT_S)
            )
        elif not method.server_streaming:
            uploading = channel.stream_unary(method.path, None, None)(None, timeout=CALL_TIMEOUT_S)
            await (await no_requests(uploading))
        else:
            both = channel.stream_stream(method.path, None, None)(None, timeout=CALL_TIMEOUT_S)
            await first_message(await no_requests(both))
    except grpc.aio.AioRpcError as error:
        if error.code() == grpc.StatusCode.UNAVAILABLE:
            return "refused in the handshake"
        if error.code() == grpc.StatusCode.UNIMPLEMENTED:
            return "not served"
        if error.code() == grpc.StatusCode.PERMISSION_DENIED:
            expected = f"caller {identity} may not call {method.path}"
            return "denied" if error.details() == expected else f"denied: {error.details()}"
    # Reached the handler, which answered (INVALID_ARGUMENT for an empty
    # request, NOT_FOUND...) or kept the stream open past the timeout.
    return "admitted"


def start(
    topology: Topology, run_dir_factory: pytest.TempPathFactory, mtls: dict[str, str]
) -> tuple[Stack, dict[str, LocalService]]:
    ports = {key: free_port() for key in topology.default_ports()}
    run_dir = run_dir_factory.mktemp("mesh")
    services = [
        dataclasses.replace(s, environment={**s.environment, **QUIET, **mtls})
        for s in (topology.resolve(name, ports, run_dir) for name in STACK)
    ]
    stack = Stack(run_dir)
    start_all(stack, services)
    return stack, {s.name: s for s in services}


@pytest.fixture(scope="module")
def shop(
    topology: Topology, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, LocalService]]:
    stack, services = start(topology, tmp_path_factory, MTLS_ON)
    directory = certs_dir(services["catalog"])
    write_bad_certificates(directory, load(directory, "ca"), "orders")
    try:
        yield services
    finally:
        stack.stop()


async def matrix(
    services: dict[str, LocalService], callers: dict[str, grpc.ChannelCredentials | None]
) -> dict[tuple[str, str, str], str]:
    """(target, method, caller) -> outcome, for every combination."""
    results: dict[tuple[str, str, str], str] = {}
    for target, module in TARGETS.items():
        address = str(services[target].grpc_target)
        for caller, creds in callers.items():
            if creds is None:
                channel = grpc.aio.insecure_channel(address)
            else:
                override = [("grpc.ssl_target_name_override", target)]
                channel = grpc.aio.secure_channel(address, creds, options=override)
            identity = spiffe_id(caller) if caller in SERVICES else "no identity"
            async with channel:
                calls = (call(channel, m, identity) for m in methods_of(module))
                outcomes = await asyncio.gather(*calls)
            for method, what in zip(methods_of(module), outcomes, strict=True):
                results[target, method.path, caller] = what
    return results


async def test_only_the_policy_s_callers_reach_each_method(shop: dict[str, LocalService]) -> None:
    directory = certs_dir(shop["catalog"])
    callers: dict[str, grpc.ChannelCredentials | None] = {"plaintext": None}
    callers |= {
        kind: credentials(directory, name, ca) for kind, (name, ca) in REFUSED_CERTIFICATES.items()
    }
    callers |= {name: credentials(directory, name) for name in SERVICES}
    policy = load_policy_from_env(Env(dict(shop["catalog"].environment)))

    found = await matrix(shop, callers)

    expected = {}
    for target, method, caller in found:
        if caller not in SERVICES:
            expected[target, method, caller] = "refused in the handshake"
        elif policy.allows(target, spiffe_id(caller), method):
            expected[target, method, caller] = "admitted"
        else:
            expected[target, method, caller] = "denied"
    # A service may serve one version of reflection only: the other is
    # reachable by nobody, which is as closed as denied.
    wrong = {
        key: (found[key], want)
        for key, want in expected.items()
        if found[key] != want and not (found[key] == "not served" and "Reflection" in key[1])
    }
    assert not wrong, "\n".join(f"{k}: got {g}, policy says {w}" for k, (g, w) in wrong.items())
    # The matrix covers every service, method and caller kind.
    assert {caller for _, _, caller in found} == set(callers)
    assert sum(1 for v in found.values() if v == "admitted") > len(TARGETS) * len(SERVICES)


async def test_control_without_mtls_every_plaintext_caller_reaches_every_handler(
    topology: Topology, tmp_path_factory: pytest.TempPathFactory
) -> None:
    stack, services = start(topology, tmp_path_factory, MTLS_OFF)
    try:
        found = await matrix(services, {"plaintext": None})
    finally:
        stack.stop()
    reached = {
        key: v for key, v in found.items() if v != "not served" or "Reflection" not in key[1]
    }
    assert set(reached.values()) == {"admitted"}, found
    assert len(reached) > len(TARGETS) * 3


SUBJECT_CASES = [
    ("orders", "catalog", "/shop.catalog.v1.CatalogService/GetProduct"),
    ("orders", "inventory", "/shop.inventory.v1.InventoryService/ReserveStock"),
    ("orders", "payments", "/shop.payments.v1.PaymentsService/Charge"),
]


@pytest.mark.parametrize(("caller", "target", "path"), SUBJECT_CASES)
async def test_a_customer_identity_from_any_caller_but_the_gateway_is_refused(
    shop: dict[str, LocalService], caller: str, target: str, path: str
) -> None:
    directory = certs_dir(shop[target])
    override = [("grpc.ssl_target_name_override", target)]
    address = str(shop[target].grpc_target)
    forged = (("x-shop-subject", "cus-someone-else"),)
    async with grpc.aio.secure_channel(address, credentials(directory, caller), override) as ch:
        method = ch.unary_unary(path, None, None)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await method(b"", metadata=forged, timeout=CALL_TIMEOUT_S)
        # Control: the same call without the header reaches the handler.
        with pytest.raises(grpc.aio.AioRpcError) as plain:
            await method(b"", timeout=CALL_TIMEOUT_S)
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert refused.value.details() == (
        f"caller {spiffe_id(caller)} may not send x-shop-subject "
        f"(only {spiffe_id('gateway')} may) calling {path}"
    )
    assert plain.value.code() == grpc.StatusCode.INVALID_ARGUMENT  # the empty request


async def test_the_gateway_may_vouch_for_a_customer(shop: dict[str, LocalService]) -> None:
    directory = certs_dir(shop["orders"])
    override = [("grpc.ssl_target_name_override", "orders")]
    address = str(shop["orders"].grpc_target)
    async with grpc.aio.secure_channel(address, credentials(directory, "gateway"), override) as ch:
        request = orders_pb2.GetOrderRequest(id="ord-missing").SerializeToString()
        with pytest.raises(grpc.aio.AioRpcError) as answer:
            await ch.unary_unary("/shop.orders.v1.OrdersService/GetOrder", None, None)(
                request, metadata=(("x-shop-subject", "cus-demo"),), timeout=CALL_TIMEOUT_S
            )
    assert answer.value.code() == grpc.StatusCode.NOT_FOUND
