"""The real Dockerfiles and compose.yaml, built and run with Docker Compose.

`make compose-test` runs this module (it is marked `compose`, which the
default pytest run deselects): it needs a Docker engine with Compose v2 whose
base images are present — on a machine without a registry,
scripts/docker/compose-test.sh starts the project's own dockerd and builds
local stand-ins for them first.

The stack is compose.yaml itself, under a project name of its own, with the
keys of a fresh `.env` (scripts/docker/make-env.py) and one override file
that moves the two published ports (gateway 8080, Jaeger 16686) to free
loopback ports, so the test never touches whatever holds the real ones.
Everything is called from the host, as a user would: grpcurl through the
gateway, Jaeger's query API, `docker compose`. The stack is torn down with
its volumes whatever happens, and the last check is that nothing of it is
left: no container, network or volume.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from localmode.topology import REPO_ROOT
from mesh.faultctl import write as write_faults
from tests.conftest import GRPCURL, require_tool
from tests.shop_calls import (
    SIX,
    Checkout,
    Gateway,
    notification_of,
    place_order,
    read_env_file,
    run,
    spans_per_host,
    wait_until,
)
from tracing.jaeger import wait_for_trace

pytestmark = pytest.mark.compose

COMPOSE_FILE = REPO_ROOT / "compose.yaml"
MAKE_ENV = REPO_ROOT / "scripts" / "docker" / "make-env.py"
# The variables make-env.py writes; taken out of the environment compose
# runs in, so the test's .env is what the stack gets.
KEY_VARIABLES = (
    "CATALOG_PAGE_TOKEN_KEY",
    "ORDERS_PAGE_TOKEN_KEY",
    "NOTIFICATIONS_PAGE_TOKEN_KEY",
    "GATEWAY_JWT_KEY",
    "GATEWAY_API_KEYS",
)
ONE_SHOT = "certs"  # makes the mesh's certificates, then exits
PUBLISHED = {("gateway", 8080), ("jaeger", 16686), ("console", 8088)}
# The compose test's own published ports: free ones, on loopback only; and
# its own fault file's folder in place of ./faults (volumes merge by target),
# so that a `make fault` for a stack the user has up is neither read nor touched.
OVERRIDE = """\
services:
  gateway:
    ports: !override ["127.0.0.1::8080"]
    volumes: ["{faults}:/faults:ro"]
  jaeger:
    ports: !override ["127.0.0.1::16686"]
  console:
    ports: !override ["127.0.0.1::8088"]
    volumes: ["{faults}:/faults"]
"""
FAULTS_MOUNT = '  {service}:\n    volumes: ["{faults}:/faults:ro"]\n'
FAULTED = ("catalog", "orders", "inventory", "payments", "notifications")  # and the gateway
BUILD_TIMEOUT_S = 40 * 60
UP_TIMEOUT_S = 300
WAIT_S = 90.0


@dataclass(kw_only=True)
class Stack(Gateway):
    """The compose project; its published gateway is `address`."""

    project: str
    workdir: Path
    measurements: list[tuple[str, str]]  # printed at the end (conftest.py)
    jaeger_url: str = ""
    console_url: str = ""

    def compose_argv(self, *args: str) -> list[str]:
        return [
            "docker",
            "compose",
            "--project-name",
            self.project,
            "--project-directory",
            str(REPO_ROOT),
            "--file",
            str(COMPOSE_FILE),
            "--file",
            str(self.workdir / "compose.test.yaml"),
            "--env-file",
            str(self.workdir / ".env"),
            *args,
        ]

    def compose(
        self, *args: str, timeout_s: float = 120, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        return run(self.compose_argv(*args), self.env, timeout_s, check)

    def docker(
        self, *args: str, timeout_s: float = 60, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        return run(["docker", *args], self.env, timeout_s, check)

    def container_ids(self, service: str) -> list[str]:
        out = self.compose("ps", "--quiet", service).stdout
        return sorted(line for line in out.split() if line)


def published_port(stack: Stack, service: str, port: int) -> str:
    out = stack.compose("port", service, str(port)).stdout.strip()
    _host, _, mapped = out.rpartition(":")
    assert mapped.isdigit(), f"docker compose port {service} {port} said {out!r}"
    return f"127.0.0.1:{mapped}"


def leftovers(stack: Stack) -> list[str]:
    label = f"label=com.docker.compose.project={stack.project}"
    found = []
    for kind, argv in (
        ("container", ["ps", "--all", "--quiet", "--filter", label]),
        ("network", ["network", "ls", "--quiet", "--filter", label]),
        ("volume", ["volume", "ls", "--quiet", "--filter", label]),
    ):
        found += [f"{kind} {item}" for item in stack.docker(*argv).stdout.split()]
    return found


def measure_memory(stack: Stack) -> None:
    """Sum of the running containers' memory, as `docker stats --no-stream` reports it."""
    ids = stack.compose("ps", "--quiet").stdout.split()
    out = stack.docker(
        "stats", "--no-stream", "--format", "{{.Name}}\t{{.MemUsage}}", *ids, timeout_s=120
    ).stdout
    units = {"B": 1, "KiB": 2**10, "MiB": 2**20, "GiB": 2**30, "kB": 1e3, "MB": 1e6, "GB": 1e9}
    total = 0.0
    for line in out.splitlines():
        usage = line.split("\t")[1].split("/")[0].strip()
        match = re.fullmatch(r"([\d.]+)\s*([A-Za-z]+)", usage)
        assert match, f"cannot read docker stats line {line!r}"
        total += float(match.group(1)) * units[match.group(2)]
    stack.measurements.append(
        (f"memory of the stack ({len(ids)} containers)", f"{total / 2**20:.0f} MiB")
    )


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory,
    request: pytest.FixtureRequest,
    measurements: list[tuple[str, str]],
) -> Iterator[Stack]:
    require_tool(GRPCURL)
    for tool in ("docker",):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is not on PATH: run the test with `make compose-test`")
    workdir = tmp_path_factory.mktemp("compose")
    run([sys.executable, str(MAKE_ENV), str(workdir / ".env")], os.environ, 30, True)
    faults = workdir / "faults"
    faults.mkdir(mode=0o755)
    faults.chmod(0o755)  # read by the services' own users
    mounts = "".join(FAULTS_MOUNT.format(service=s, faults=faults) for s in FAULTED)
    (workdir / "compose.test.yaml").write_text(OVERRIDE.format(faults=faults) + mounts)
    # Not the test session's MESH_MTLS=off: the stack runs as a user's does.
    env = {k: v for k, v in os.environ.items() if k not in (*KEY_VARIABLES, "MESH_MTLS")}
    stack = Stack(
        project=f"shopmesh-test-{secrets.token_hex(4)}",
        workdir=workdir,
        env=env,
        keys=read_env_file(workdir / ".env"),
        measurements=measurements,
    )
    info = stack.docker("info", "--format", "{{.ServerVersion}}", check=False)
    if info.returncode != 0:
        pytest.fail(f"no Docker engine answers (run `make compose-test`): {info.stderr.strip()}")
    version = stack.compose("version", "--short").stdout.strip()
    measurements.append(("engine / compose", f"dockerd {info.stdout.strip()}, compose {version}"))
    try:
        started = time.monotonic()
        # One image at a time: builds on a small machine are CPU-bound.
        stack.compose("--parallel", "1", "build", timeout_s=BUILD_TIMEOUT_S)
        measurements.append(("docker compose build", f"{time.monotonic() - started:.0f} s"))
        started = time.monotonic()
        stack.compose(
            "up",
            "--detach",
            "--wait",
            "--wait-timeout",
            str(UP_TIMEOUT_S),
            timeout_s=UP_TIMEOUT_S + 60,
        )
        measurements.append(("docker compose up --wait", f"{time.monotonic() - started:.0f} s"))
        stack.address = published_port(stack, "gateway", 8080)
        stack.jaeger_url = f"http://{published_port(stack, 'jaeger', 16686)}"
        stack.console_url = f"http://{published_port(stack, 'console', 8088)}"
        images = stack.docker(
            "image", "ls", "--format", "{{.Repository}}:{{.Tag}} {{.Size}}", "shopmesh/*"
        ).stdout.split("\n")
        measurements.append(("images", ", ".join(i for i in sorted(images) if i)))
        yield stack
    finally:
        if request.session.testsfailed:
            for argv in (("ps", "--all"), ("logs", "--no-color", "--tail", "40")):
                out = stack.compose(*argv, check=False)
                print(f"--- docker compose {' '.join(argv)}\n{out.stdout}{out.stderr}")
        stack.compose("down", "--volumes", "--remove-orphans", "--timeout", "10", timeout_s=180)
        left = leftovers(stack)
        assert not left, f"`docker compose down` left behind: {left}"


@pytest.fixture(scope="module")
def customer() -> str:
    return f"cus-compose-{secrets.token_hex(4)}"


@pytest.fixture(scope="module")
def auth(stack: Stack, customer: str) -> dict[str, str]:
    return {"authorization": f"Bearer {stack.token(customer)}"}


@pytest.fixture(scope="module")
def checkout(stack: Stack, customer: str, auth: dict[str, str]) -> Checkout:
    return place_order(stack, customer, auth)


def test_the_compose_file_declares_health_limits_volumes_and_three_published_ports(
    stack: Stack,
) -> None:
    config = json.loads(stack.compose("config", "--format", "json").stdout)
    services: dict[str, Any] = config["services"]
    assert set(services) == SIX | {"jaeger", "nats", "console", ONE_SHOT}
    # The one-shot that makes the certificates runs to completion: no
    # healthcheck, no port; every service waits for it to have succeeded.
    assert not services[ONE_SHOT].get("ports")
    for name in SIX:
        assert services[name]["depends_on"][ONE_SHOT]["condition"] == (
            "service_completed_successfully"
        )
        assert services[name]["environment"]["MESH_MTLS"] == "on"
    published = set()
    for name, spec in services.items():
        if name == ONE_SHOT:
            continue
        assert spec.get("healthcheck", {}).get("test"), f"{name} has no healthcheck"
        assert spec["deploy"]["resources"]["limits"]["memory"], f"{name} has no memory limit"
        for dependency, how in spec.get("depends_on", {}).items():
            if dependency != ONE_SHOT:
                assert how["condition"] == "service_healthy", f"{name} -> {dependency}: {how}"
        published |= {(name, int(p["target"])) for p in spec.get("ports", [])}
        if name in SIX - {"gateway"} or name == "nats":
            volumes = [v for v in spec.get("volumes", []) if v["type"] == "volume"]
            assert volumes, f"{name} keeps its data in no named volume"
    assert published == PUBLISHED


def test_every_container_is_healthy(stack: Stack) -> None:
    lines = stack.compose("ps", "--format", "json").stdout.splitlines()
    containers = [json.loads(line) for line in lines if line.strip()]
    states = {c["Service"]: (c["State"], c["Health"]) for c in containers}
    assert set(states) == SIX | {"jaeger", "nats", "console"}
    assert all(s == ("running", "healthy") for s in states.values()), states
    measure_memory(stack)


def test_grpcurl_lists_and_describes_the_public_services_through_the_gateway(
    stack: Stack,
) -> None:
    listed = stack.grpcurl("list").stdout.split()
    for service in ("CatalogService", "OrdersService", "NotificationsService"):
        assert f"shop.{service.removesuffix('Service').lower()}.v1.{service}" in listed
    assert not any("Inventory" in s or "Payments" in s for s in listed), listed
    described = stack.grpcurl("describe shop.orders.v1.OrdersService").stdout
    assert "rpc PlaceOrder ( .shop.orders.v1.PlaceOrderRequest )" in described


def test_the_catalog_can_be_browsed_and_searched(stack: Stack) -> None:
    first = stack.call("shop.catalog.v1.CatalogService/ListProducts", {"page_size": 3})
    assert len(first["products"]) == 3
    assert first["next_page_token"]
    second = stack.call(
        "shop.catalog.v1.CatalogService/ListProducts",
        {"page_size": 3, "page_token": first["next_page_token"]},
    )
    assert {p["id"] for p in second["products"]}.isdisjoint(p["id"] for p in first["products"])
    product = stack.call("shop.catalog.v1.CatalogService/GetProduct", {"id": "prod-chemex"})
    assert product["product"]["id"] == "prod-chemex"
    found = stack.call("shop.catalog.v1.CatalogService/SearchProducts", {"query": "chemex"})
    assert "prod-chemex" in {p["id"] for p in found["products"]}


def test_a_checkout_is_one_trace_across_every_service_in_jaeger(
    stack: Stack, checkout: Checkout
) -> None:
    trace = wait_for_trace(
        checkout.trace_id,
        timeout_s=WAIT_S,
        base_url=stack.jaeger_url,
        predicate=lambda t: t.services() >= SIX,
    )
    assert trace.services() >= SIX


def test_the_checkout_is_notified(
    stack: Stack, checkout: Checkout, customer: str, auth: dict[str, str]
) -> None:
    def notified() -> dict[str, Any] | None:
        return notification_of(stack, checkout, customer, auth)

    notification = wait_until("the checkout's notification", notified, WAIT_S, 1.0)
    assert notification["customer_id"] == customer


def test_the_console_shows_every_service_serving_and_the_checkouts_edges(
    stack: Stack, checkout: Checkout
) -> None:
    def topology() -> dict[str, Any]:
        with urllib.request.urlopen(f"{stack.console_url}/api/topology", timeout=10) as r:
            document: dict[str, Any] = json.load(r)
        return document

    document = topology()
    health = {n["id"]: n["health"] for n in document["nodes"] if n["kind"] == "service"}
    assert health == dict.fromkeys(SIX, "SERVING"), document["errors"]
    edges = {e["id"]: e for e in document["edges"]}
    grpc_edges = ("gateway->orders", "orders->catalog", "orders->inventory", "orders->payments")
    for edge in (*grpc_edges, "orders->notifications"):
        assert edges[edge]["calls"] > 0, edges.keys()
    assert edges["orders->notifications"]["transport"] == "nats"
    with urllib.request.urlopen(stack.console_url, timeout=10) as page:
        assert b"<html" in page.read(4096).lower()


def test_scaled_catalog_replicas_all_get_calls_through_dns_round_robin(stack: Stack) -> None:
    stack.compose(
        "up",
        "--detach",
        "--wait",
        "--wait-timeout",
        str(UP_TIMEOUT_S),
        "--no-recreate",
        "--scale",
        "catalog=3",
        timeout_s=UP_TIMEOUT_S + 60,
    )
    replicas = stack.container_ids("catalog")
    assert len(replicas) == 3
    hostnames = {
        stack.docker("inspect", "--format", "{{.Config.Hostname}}", c).stdout.strip()
        for c in replicas
    }
    since = time.time_ns()
    started = time.monotonic()

    def every_replica_served() -> Counter[str] | None:
        for _ in range(6):
            stack.call("shop.catalog.v1.CatalogService/GetProduct", {"id": "prod-chemex"})
        hosts = spans_per_host(stack.jaeger_url, "catalog", since)
        return hosts if hostnames <= set(hosts) else None

    # The gateway resolved `catalog` when it first connected; it resolves it
    # again when the connection it has is closed, which catalog does after
    # GRPC_MAX_CONNECTION_AGE_SECONDS (30 s in compose.yaml).
    hosts = wait_until("calls reaching all three catalog replicas", every_replica_served, 150, 2)
    stack.measurements.append(
        (
            "catalog spans per replica after --scale catalog=3",
            f"{dict(hosts)} (all three after {time.monotonic() - started:.0f} s)",
        )
    )
    # The replicas share the page-token key from .env: a token from one
    # replica pages on any other (round_robin spreads these calls over all).
    first = stack.call("shop.catalog.v1.CatalogService/ListProducts", {"page_size": 2})
    for _ in range(6):
        page = stack.call(
            "shop.catalog.v1.CatalogService/ListProducts",
            {"page_size": 2, "page_token": first["next_page_token"]},
        )
        assert len(page["products"]) == 2
    measure_memory(stack)


# Run inside the gateway's container, as the gateway: its certificate from
# the certs volume, the compose network's service names.
MESH_CHECK = """
import asyncio, json
import grpc
from mesh.channels import Channels
from shop.catalog.v1 import catalog_pb2, catalog_pb2_grpc
from shop.inventory.v1 import inventory_pb2, inventory_pb2_grpc

async def outcome(call):
    try:
        await call
        return "OK"
    except grpc.aio.AioRpcError as error:
        return f"{error.code().name}: {error.details()}"

async def main():
    product = catalog_pb2.GetProductRequest(id="prod-chemex")
    stock = inventory_pb2.GetStockRequest(product_ids=["prod-chemex"])
    channels = Channels()
    async with grpc.aio.insecure_channel("catalog:50051") as plaintext:
        found = {
            "mtls": await outcome(catalog_pb2_grpc.CatalogServiceStub(
                channels.get("catalog:50051")).GetProduct(product, timeout=10)),
            "plaintext": await outcome(catalog_pb2_grpc.CatalogServiceStub(
                plaintext).GetProduct(product, timeout=10)),
            "internal": await outcome(inventory_pb2_grpc.InventoryServiceStub(
                channels.get("inventory:50053")).GetStock(stock, timeout=10)),
        }
    await channels.close()
    print(json.dumps(found))

asyncio.run(main())
"""


def test_services_speak_mtls_and_enforce_the_policy(stack: Stack) -> None:
    def check() -> dict[str, str]:
        out = stack.compose("exec", "-T", "gateway", "python", "-c", MESH_CHECK).stdout
        found: dict[str, str] = json.loads(out.strip().splitlines()[-1])
        return found

    found = check()
    assert found["mtls"] == "OK"
    assert found["plaintext"].startswith("UNAVAILABLE"), found
    assert found["internal"] == (
        "PERMISSION_DENIED: caller spiffe://shop.local/gateway "
        "may not call /shop.inventory.v1.InventoryService/GetStock"
    )
    # Rotation as the README gives it: every certificate issued again, no restart.
    rotated = stack.compose("run", "--rm", "certs", "--rotate", timeout_s=120).stdout
    assert "rotated" in rotated
    assert check()["mtls"] == "OK"
    assert stack.call("shop.catalog.v1.CatalogService/GetProduct", {"id": "prod-chemex"})


def test_a_killed_and_replaced_orders_container_keeps_its_orders(
    stack: Stack, checkout: Checkout, auth: dict[str, str]
) -> None:
    def get_order() -> dict[str, Any] | None:
        result = stack.grpcurl(
            "shop.orders.v1.OrdersService/GetOrder", {"id": checkout.order_id}, auth, check=False
        )
        if result.returncode != 0:
            return None
        order: dict[str, Any] = json.loads(result.stdout)["order"]
        return order

    assert get_order() is not None
    [before] = stack.container_ids("orders")
    stack.compose("kill", "orders")
    stack.compose("rm", "--force", "orders")
    assert stack.container_ids("orders") == []
    stack.compose(
        "up",
        "--detach",
        "--wait",
        "--wait-timeout",
        str(UP_TIMEOUT_S),
        "--no-deps",
        "orders",
        timeout_s=UP_TIMEOUT_S + 60,
    )
    [after] = stack.container_ids("orders")
    assert after != before, "orders was not replaced by a new container"
    order = wait_until("the order, from the new orders container", get_order, WAIT_S, 1.0)
    assert order["id"] == checkout.order_id
    assert order["status"] == "ORDER_STATUS_CONFIRMED"


# Run inside the gateway's container: every service's metrics endpoint, by
# its name in the compose network.
METRICS_CHECK = """
import json, urllib.request
ports = {"gateway": 9460, "orders": 9462, "inventory": 9463, "payments": 9464}
texts = {}
for name, port in ports.items():
    with urllib.request.urlopen(f"http://{name}:{port}/metrics", timeout=10) as reply:
        texts[name] = reply.read().decode()
print(json.dumps(texts))
"""


def _has_sample(text: str, name: str, **labels: str) -> bool:
    """Whether a sample of `name` carries every one of `labels` (any order)."""
    wanted = [f'{key}="{value}"' for key, value in labels.items()]
    return any(
        line.startswith(name + "{") and all(w in line for w in wanted) for line in text.splitlines()
    )


def test_every_service_serves_red_metrics_by_edge(stack: Stack, checkout: Checkout) -> None:
    out = stack.compose("exec", "-T", "gateway", "python", "-c", METRICS_CHECK).stdout
    texts: dict[str, str] = json.loads(out.strip().splitlines()[-1])
    count = "rpc_server_call_duration_seconds_count"
    ok = {"rpc_grpc_status_code": "OK"}
    # orders may be a container recreated since the checkout (an earlier
    # test kills it): any call of the gateway's will do there.
    orders = {"rpc_service": "shop.orders.v1.OrdersService"}
    assert _has_sample(texts["orders"], count, mesh_caller="gateway", **orders, **ok)
    for service, method in (("inventory", "ReserveStock"), ("payments", "Charge")):
        assert _has_sample(texts[service], count, rpc_method=method, mesh_caller="orders", **ok)
    assert _has_sample(
        texts["gateway"], "rpc_client_call_duration_seconds_count", mesh_callee="orders", **ok
    )


def test_a_fault_switched_at_run_time_reaches_the_container(stack: Stack) -> None:
    faults = stack.workdir / "faults" / "faults.yaml"
    rule = {"catalog": {"GetProduct": {"error_ratio": 1, "error_code": "RESOURCE_EXHAUSTED"}}}
    product = ("shop.catalog.v1.CatalogService/GetProduct", {"id": "prod-chemex"})
    injected = "injected fault in /shop.catalog.v1.CatalogService/GetProduct"
    try:
        write_faults(faults, rule)
        wait_until(
            "the fault",
            lambda: injected in stack.grpcurl(*product, check=False).stderr or None,
            timeout_s=WAIT_S,
            every_s=0.5,
        )
    finally:
        write_faults(faults, {})
    wait_until(
        "the fault cleared",  # the gateway's breaker may have opened meanwhile: 5 s
        lambda: stack.grpcurl(*product, check=False).returncode == 0 or None,
        timeout_s=WAIT_S,
        every_s=0.5,
    )
