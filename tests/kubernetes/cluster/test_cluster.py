"""The shop on a real single-node Kubernetes cluster (`make k8s-test`).

The cluster is built from the Go modules and run on this machine
(tests/kubernetes/cluster/node.py); the shop is overlays/local with the
images of the compose test, loaded into the node's containerd. Everything is
called from the host through `kubectl port-forward`, as a user would: a
checkout through the gateway with a demo token, its trace in Jaeger, the
notification; catalog scaled to three pods, each of which gets calls; a
catalog pod deleted under steady load without one failed call."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest

from bench.report import percentile
from shop.catalog.v1 import catalog_pb2, catalog_pb2_grpc
from tests.kubernetes.cluster.layout import CGROUP_ROOT
from tests.kubernetes.cluster.node import Node
from tests.kubernetes.cluster.shop import NAMESPACE, wait_for_rollouts
from tests.shop_calls import (
    SIX,
    Checkout,
    Gateway,
    notification_of,
    spans_per_host,
    wait_until,
)
from tracing.jaeger import wait_for_trace

pytestmark = pytest.mark.k8s

WAIT_S = 120.0


def pods(node: Node, selector: str = "") -> list[dict[str, Any]]:
    argv = ["-n", NAMESPACE, "get", "pods", "-o", "json"]
    if selector:
        argv += ["-l", selector]
    items: list[dict[str, Any]] = json.loads(node.kubectl(*argv).stdout)["items"]
    return items


def is_ready(pod: dict[str, Any]) -> bool:
    conditions = pod.get("status", {}).get("conditions", [])
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def pods_memory_mib() -> float:
    """Resident memory of everything in the node's pods (cgroup v1 memory.stat)."""
    stat = Path("/sys/fs/cgroup/memory") / CGROUP_ROOT.lstrip("/") / "memory.stat"
    fields = dict(line.split() for line in stat.read_text().splitlines())
    return int(fields["total_rss"]) / 2**20


def test_every_pod_is_ready_under_restricted_pod_security(
    node: Node, keys: dict[str, str], measurements: list[tuple[str, str]]
) -> None:
    namespace = json.loads(node.kubectl("get", "namespace", NAMESPACE, "-o", "json").stdout)
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    running = pods(node)
    names = {p["metadata"]["labels"].get("app.kubernetes.io/name") for p in running}
    assert names >= SIX | {"jaeger", "nats"}, names
    assert all(is_ready(p) for p in running), [
        (p["metadata"]["name"], p["status"].get("phase")) for p in running if not is_ready(p)
    ]
    cluster = sum(rss_mib(pid) for pid in node.processes.alive().values())
    measurements.append(("memory: the cluster's processes (RSS)", f"{cluster:.0f} MiB"))
    measurements.append(
        (f"memory: the shop's {len(running)} pods (cgroup rss)", f"{pods_memory_mib():.0f} MiB")
    )


def test_a_checkout_through_the_gateway_is_one_trace_across_every_service(
    checkout: Checkout, jaeger_url: str
) -> None:
    trace = wait_for_trace(
        checkout.trace_id,
        timeout_s=WAIT_S,
        base_url=jaeger_url,
        predicate=lambda t: t.services() >= SIX,
    )
    assert trace.services() >= SIX


def test_the_checkout_is_notified(
    gateway: Gateway, checkout: Checkout, customer: str, auth: dict[str, str]
) -> None:
    notification = wait_until(
        "the checkout's notification",
        lambda: notification_of(gateway, checkout, customer, auth),
        WAIT_S,
        1.0,
    )
    assert notification["customer_id"] == customer


def catalog_pods(node: Node) -> list[str]:
    return sorted(
        p["metadata"]["name"]
        for p in pods(node, "app.kubernetes.io/name=catalog")
        if is_ready(p) and not p["metadata"].get("deletionTimestamp")
    )


def test_catalog_scaled_to_three_pods_all_get_calls(
    node: Node, gateway: Gateway, jaeger_url: str, measurements: list[tuple[str, str]]
) -> None:
    node.kubectl("-n", NAMESPACE, "scale", "deployment/catalog", "--replicas=3")
    wait_for_rollouts(node)
    replicas = set(catalog_pods(node))
    assert len(replicas) == 3, replicas
    since = time.time_ns()
    started = time.monotonic()

    def every_replica_served() -> Counter[str] | None:
        for _ in range(6):
            gateway.call("shop.catalog.v1.CatalogService/GetProduct", {"id": "prod-chemex"})
        hosts = spans_per_host(jaeger_url, "catalog", since)
        return hosts if replicas <= set(hosts) else None

    # The gateway resolves catalog-headless again when a connection closes,
    # which catalog does after GRPC_MAX_CONNECTION_AGE_SECONDS (30 s).
    hosts = wait_until("calls reaching all three catalog pods", every_replica_served, 150, 2)
    measurements.append(
        (
            "catalog spans per pod after kubectl scale --replicas=3",
            f"{dict(hosts)} (all three after {time.monotonic() - started:.0f} s)",
        )
    )


@dataclass
class Load:
    """GetProduct calls through the gateway at a steady rate from a few
    threads, until stopped. The rate stays under the gateway's limit for one
    caller (100/s by default): every call here comes from the one peer
    address of the port-forward."""

    address: str
    per_second: float = 40.0
    threads: int = 4
    ok: int = 0
    failed: Counter[str] = field(default_factory=Counter)
    latencies_ms: list[float] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def run(self) -> None:
        with grpc.insecure_channel(self.address) as channel:
            stub = catalog_pb2_grpc.CatalogServiceStub(channel)
            request = catalog_pb2.GetProductRequest(id="prod-chemex")
            interval = self.threads / self.per_second
            next_call = time.monotonic()
            while not self._stop.wait(max(0.0, next_call - time.monotonic())):
                next_call += interval
                started = time.perf_counter()
                try:
                    stub.GetProduct(request, timeout=10)
                except grpc.RpcError as error:
                    with self._lock:
                        self.failed[f"{error.code().name}: {error.details()}"] += 1
                    continue
                with self._lock:
                    self.ok += 1
                    self.latencies_ms.append((time.perf_counter() - started) * 1000)

    def __enter__(self) -> Load:
        self._workers = [threading.Thread(target=self.run) for _ in range(self.threads)]
        for worker in self._workers:
            worker.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for worker in self._workers:
            worker.join(timeout=30)

    def p99_ms(self) -> float:
        return percentile(self.latencies_ms, 0.99) if self.latencies_ms else 0.0


def delete_under_load(
    node: Node, gateway: Gateway, victim: str, *delete_flags: str
) -> tuple[Load, str]:
    """Deletes `victim` while a steady load runs; the load and a summary."""
    count = len(catalog_pods(node))
    with Load(gateway.address) as load:
        time.sleep(5)
        calls_before = load.ok
        deleted = time.monotonic()
        node.kubectl("-n", NAMESPACE, "delete", "pod", victim, *delete_flags, timeout_s=90)
        gone_after = time.monotonic() - deleted
        wait_until(
            "a replacement catalog pod",
            lambda: True if len(set(catalog_pods(node)) - {victim}) == count else None,
            WAIT_S,
            1.0,
        )
        replaced_after = time.monotonic() - deleted
        time.sleep(5)
    assert load.ok > calls_before > 0, "the load made no calls"
    summary = (
        f"{load.ok + sum(load.failed.values())} calls, {sum(load.failed.values())} failed, "
        f"p99 {load.p99_ms():.0f} ms; pod gone after {gone_after:.1f} s, "
        f"replaced after {replaced_after:.1f} s"
    )
    return load, summary


def test_a_catalog_pod_deleted_under_steady_load_fails_no_call(
    node: Node, gateway: Gateway, measurements: list[tuple[str, str]]
) -> None:
    before = catalog_pods(node)
    assert len(before) >= 2, f"needs catalog scaled out first: {before}"
    # As a node drain or a rollout would: SIGTERM, the services' drain, gone.
    load, summary = delete_under_load(node, gateway, before[0], "--wait=true")
    measurements.append((f"catalog pod deleted of {len(before)}, {load.per_second:.0f}/s", summary))
    assert not load.failed, f"calls failed while {before[0]} was deleted: {dict(load.failed)}"


def test_control_the_only_catalog_pod_killed_under_load_fails_calls(
    node: Node, gateway: Gateway, measurements: list[tuple[str, str]]
) -> None:
    """The control of the test above: the same load sees failures when there
    is no other pod to go to and no drain (the only pod killed at once)."""
    node.kubectl("-n", NAMESPACE, "scale", "deployment/catalog", "--replicas=1")
    wait_until(
        "catalog down to one pod",
        lambda: True if len(catalog_pods(node)) == 1 else None,
        WAIT_S,
        1.0,
    )
    wait_for_rollouts(node)
    (only,) = catalog_pods(node)
    load, summary = delete_under_load(node, gateway, only, "--grace-period=0", "--force")
    measurements.append((f"control: the only catalog pod killed, {load.per_second:.0f}/s", summary))
    assert load.failed, "killing the only catalog pod failed no call: the load test sees nothing"
