"""The cluster and the shop on it, once per session (`make k8s-test`): started
before the first test, stopped and cleaned away after the last, whatever
happens; the logs of the cluster's programs are kept in .run/k8s-test/logs.
What the run measured is printed at the end (tests/conftest.py)."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator

import pytest

from localmode.topology import REPO_ROOT
from tests.conftest import GRPCURL, Measurements, require_tool
from tests.kubernetes.cluster import shop
from tests.kubernetes.cluster.layout import Layout
from tests.kubernetes.cluster.node import Node, clear_leftovers, remove_state
from tests.kubernetes.cluster.processes import StartFailed
from tests.shop_calls import Checkout, Gateway, place_order

LOGS = REPO_ROOT / ".run" / "k8s-test" / "logs"


@pytest.fixture(scope="session")
def node(measurements: Measurements) -> Iterator[Node]:
    if os.geteuid() != 0:
        pytest.fail("the cluster test runs a kubelet and containerd: it needs root")
    try:
        layout = Layout.from_env()
    except LookupError as error:
        pytest.fail(str(error))
    clear_leftovers(layout)  # of a run that was killed
    node = Node(layout)
    try:
        try:
            node.up()
        except StartFailed as error:
            pytest.fail(f"the cluster did not start: {error}")
        measurements.extend((f"start: {what}", f"{s:.1f} s") for what, s in node.timings)
        yield node
    finally:
        problems = node.down()
        remove_state(layout, keep_logs_in=LOGS)
        assert not problems, f"cleaning up after the cluster: {problems}"


@pytest.fixture(scope="session")
def keys(node: Node, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The shop deployed from overlays/local; its Secret shop-keys' values."""
    return shop.deploy(node, tmp_path_factory.mktemp("k8s"))


@pytest.fixture(scope="session")
def gateway(node: Node, keys: dict[str, str]) -> Iterator[Gateway]:
    require_tool(GRPCURL)
    with shop.port_forward(node, "svc/gateway", 8080) as address:
        yield Gateway(address=address, env=dict(os.environ), keys=keys)


@pytest.fixture(scope="session")
def jaeger_url(node: Node, keys: dict[str, str]) -> Iterator[str]:
    with shop.port_forward(node, "svc/jaeger", 16686) as address:
        yield f"http://{address}"


@pytest.fixture(scope="session")
def customer() -> str:
    return f"cus-k8s-{secrets.token_hex(4)}"


@pytest.fixture(scope="session")
def auth(gateway: Gateway, customer: str) -> dict[str, str]:
    return {"authorization": f"Bearer {gateway.token(customer)}"}


@pytest.fixture(scope="session")
def checkout(gateway: Gateway, customer: str, auth: dict[str, str]) -> Checkout:
    return place_order(gateway, customer, auth)
