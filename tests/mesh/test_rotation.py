"""Rotating every certificate under load: no failed call, and new connections
present the new certificates, without restarting anything.

The whole shop runs with mTLS on. 2,000 calls at a steady pace cross every
mTLS hop: through the gateway to catalog, as the gateway to orders and
notifications, as orders to inventory (Go) and payments (TypeScript), and a
new connection per call as orders to catalog, so handshakes keep happening
while the files change. After the first 600 calls, `python -m mesh.certs
--rotate` (what `make certs ROTATE=1` runs) issues every service certificate
again under the same CA. Every call must succeed; afterwards a new TLS
connection to each service must show the certificate now in its file, where
before the rotation it showed the old one (the control: the check tells the
two apart). Clients take up their new certificates too (mesh.channels): once
the channels they used before the rotation have been closed (after
`RETIRE_GRACE_S`), calls through the gateway and a checkout, which crosses
every hop orders makes, still succeed.
"""

from __future__ import annotations

import asyncio
import itertools
import socket
import ssl
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import grpc
import pytest
from cryptography import x509

from localmode.topology import REPO_ROOT, LocalService
from mesh.certs import cert_path, key_path
from mesh.channels import RETIRE_GRACE_S
from shop.catalog.v1 import catalog_pb2, catalog_pb2_grpc
from shop.inventory.v1 import inventory_pb2, inventory_pb2_grpc
from shop.notifications.v1 import notifications_pb2, notifications_pb2_grpc
from shop.orders.v1 import orders_pb2, orders_pb2_grpc
from shop.payments.v1 import payments_pb2, payments_pb2_grpc
from tests.conftest import StartStack
from tests.e2e.checkout_support import order_request
from tests.mesh_clients import certs_dir
from tests.mesh_clients import channel as mesh_channel

pytestmark = pytest.mark.e2e

STACK = ["nats", "catalog", "inventory", "payments", "orders", "notifications", "gateway"]
SERVERS = ["catalog", "inventory", "payments", "orders", "notifications"]
CALLS = 2000
ROTATE_AFTER = 600
WORKERS = 6
QUIET = {"OTEL_SDK_DISABLED": "true", "LOG_LEVEL": "WARNING"}
TIMEOUT_S = 10.0

Call = Callable[[int], Awaitable[object]]


def served_certificate(service: LocalService) -> x509.Certificate:
    """The certificate `service` presents to a new connection (a caller's handshake, as orders)."""
    directory = certs_dir(service)
    context = ssl.create_default_context(cafile=str(cert_path(directory, "ca")))
    context.load_cert_chain(cert_path(directory, "orders"), key_path(directory, "orders"))
    context.set_alpn_protocols(["h2"])
    host, port = str(service.grpc_target).rsplit(":", 1)
    with (
        socket.create_connection((host, int(port)), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname=service.name) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der)


def certificate_file(service: LocalService) -> x509.Certificate:
    path = cert_path(certs_dir(service), service.name)
    return x509.load_pem_x509_certificate(path.read_bytes())


def rotate(directory: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "mesh.certs", "--dir", str(directory), "--rotate"],
        cwd=REPO_ROOT,
        check=True,
        capture_output=True,
        timeout=60,
    )


async def test_rotating_every_certificate_under_load_fails_no_call(
    start_stack: StartStack,
) -> None:
    shop = start_stack(STACK, env=dict.fromkeys(STACK, QUIET), mtls=True)
    before = {name: served_certificate(shop[name]) for name in SERVERS}
    assert all(before[name] == certificate_file(shop[name]) for name in SERVERS)

    product = catalog_pb2.GetProductRequest(id="prod-chemex")
    async with (
        grpc.aio.insecure_channel(str(shop["gateway"].grpc_target)) as gateway,
        mesh_channel(shop["orders"]) as orders,
        mesh_channel(shop["notifications"]) as notifications,
        mesh_channel(shop["inventory"]) as inventory,
        mesh_channel(shop["payments"]) as payments,
    ):

        async def fresh_catalog(_: int) -> object:
            async with mesh_channel(shop["catalog"], "orders") as fresh:
                stub = catalog_pb2_grpc.CatalogServiceStub(fresh)
                return await stub.GetProduct(product, timeout=TIMEOUT_S)

        kinds: list[Call] = [
            lambda _: catalog_pb2_grpc.CatalogServiceStub(gateway).GetProduct(
                product, timeout=TIMEOUT_S
            ),
            lambda _: orders_pb2_grpc.OrdersServiceStub(orders).ListOrders(
                orders_pb2.ListOrdersRequest(customer_id="cus-rotation", page_size=1),
                timeout=TIMEOUT_S,
            ),
            lambda _: notifications_pb2_grpc.NotificationsServiceStub(
                notifications
            ).ListNotifications(
                notifications_pb2.ListNotificationsRequest(customer_id="cus-rotation"),
                timeout=TIMEOUT_S,
            ),
            lambda _: inventory_pb2_grpc.InventoryServiceStub(inventory).ReleaseStock(
                inventory_pb2.ReleaseStockRequest(order_id="order-rotation-never-reserved"),
                timeout=TIMEOUT_S,
            ),
            lambda i: payments_pb2_grpc.PaymentsServiceStub(payments).ResolveCharge(
                payments_pb2.ResolveChargeRequest(idempotency_key=f"rotation-{i}"),
                timeout=TIMEOUT_S,
            ),
            fresh_catalog,
        ]
        counter = itertools.count()
        done: list[int] = []
        failures: list[str] = []
        rotated = asyncio.Event()

        async def worker() -> None:
            while (i := next(counter)) < CALLS:
                if i == ROTATE_AFTER:
                    await asyncio.to_thread(rotate, certs_dir(shop["catalog"]))
                    rotated.set()
                try:
                    await kinds[i % len(kinds)](i)
                except grpc.aio.AioRpcError as error:
                    failures.append(
                        f"call {i} ({i % len(kinds)}): {error.code()} {error.details()}"
                    )
                done.append(i)

        await asyncio.gather(*(worker() for _ in range(WORKERS)))

    assert rotated.is_set()
    assert not failures, "\n".join(failures[:20])
    assert len(done) == CALLS
    for name in SERVERS:
        now = certificate_file(shop[name])
        assert now.serial_number != before[name].serial_number, f"{name} was not rotated"
        assert served_certificate(shop[name]) == now, f"{name} still serves its old certificate"

    await asyncio.sleep(RETIRE_GRACE_S + 2)  # the clients' old channels are closed by now
    async with (
        grpc.aio.insecure_channel(str(shop["gateway"].grpc_target)) as gateway,
        mesh_channel(shop["orders"]) as orders,
    ):
        found = await catalog_pb2_grpc.CatalogServiceStub(gateway).GetProduct(
            product, timeout=TIMEOUT_S
        )
        assert found.product.id == "prod-chemex"
        placed = await orders_pb2_grpc.OrdersServiceStub(orders).PlaceOrder(
            order_request("cus-rotation", [("prod-chemex", 1)]), timeout=TIMEOUT_S
        )
        assert placed.order.status == orders_pb2.ORDER_STATUS_CONFIRMED
