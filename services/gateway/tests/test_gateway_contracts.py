"""Method shapes from the generated descriptors, by the repository's naming convention."""

from __future__ import annotations

import subprocess
import sys

from gateway.contracts import Shape, contract_shapes


def test_a_shop_service_is_found_by_convention() -> None:
    shapes = contract_shapes("shop.notifications.v1.NotificationsService")
    assert shapes == {
        "ListNotifications": Shape(False, False),
        "StreamNotifications": Shape(False, True),
    }


def test_catalog_is_unary() -> None:
    shapes = contract_shapes("shop.catalog.v1.CatalogService")
    assert shapes is not None
    assert set(shapes.values()) == {Shape(False, False)}
    assert {"GetProduct", "ListProducts", "SearchProducts"} <= set(shapes)


def test_an_unknown_service_has_no_shapes() -> None:
    assert contract_shapes("test.echo.v1.Echo") is None
    assert contract_shapes("shop.nothing.v1.NothingService") is None
    assert contract_shapes("shop.catalog.v1.NoSuchService") is None
    assert contract_shapes("Bare") is None


# Run in a fresh interpreter: this test process imports every contract.
_POOL_CHECK = """
import sys
from google.protobuf import descriptor_pool
import gateway.server
from gateway.config import GatewayConfig
from gateway.contracts import contract_shapes
from mesh.config import Env

# mTLS is on by default and needs certificates; these tests are about the rest.
PLAINTEXT = {"MESH_MTLS": "off"}

for route in GatewayConfig.from_env(Env({**PLAINTEXT, })).routes:
    assert contract_shapes(route.service), route.service
for internal in ("shop.inventory.v1.InventoryService", "shop.payments.v1.PaymentsService"):
    try:
        descriptor_pool.Default().FindServiceByName(internal)
    except KeyError:
        continue
    sys.exit(f"{internal} is in the gateway's descriptor pool")
"""


def test_the_gateway_loads_no_internal_contract() -> None:
    """Reflection at the gateway describes whatever the pool holds: no internal service."""
    result = subprocess.run(
        [sys.executable, "-c", _POOL_CHECK], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
