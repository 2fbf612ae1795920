"""deploy/kubernetes, rendered by the pinned kustomize, checked without a
cluster: Kubernetes 1.35's schemas (strict), the project's rules
(tests/kubernetes/rules.py), and agreement with compose.yaml and the files
the ConfigMaps copy."""

from __future__ import annotations

import re
from typing import Any

import pytest
import yaml

from localmode.topology import REPO_ROOT
from mesh.certs import SERVICES
from mesh.config import Env
from mesh.server import ServerConfig
from tests.kubernetes.manifests import (
    DEPLOY,
    OVERLAYS,
    Manifest,
    containers,
    environment,
    find,
    ident,
    kustomize,
    main_container,
    name_of,
    of_kind,
    pinned_kustomize_version,
    pod_spec,
    render,
    workload,
    workloads,
)
from tests.kubernetes.rules import problems, stateless_problems, stateless_services
from tests.kubernetes.schema import schema_problems

Rendered = dict[str, list[Manifest]]

# kustomize reads no file outside a kustomization's folder, so base/files
# holds copies; they must stay the files the rest of the project uses.
COPIES = {
    "policy.yaml": REPO_ROOT / "mesh" / "policy.yaml",
    "traffic.yaml": REPO_ROOT / "mesh" / "traffic.yaml",
    "nats.conf": REPO_ROOT / "mesh" / "nats.conf",
    "jaeger.yaml": REPO_ROOT / "tracing" / "jaeger.yaml",
}
# The longest a service spends flushing telemetry after its server stopped
# (payments' TELEMETRY_SHUTDOWN_MS in services/payments/src/main.ts).
TELEMETRY_FLUSH_S = 5.0
# compose's `${NAME:-default}`.
_INTERPOLATION = re.compile(r"^\$\{(\w+):-(.*)\}$")
_SERVICE_ADDRESS = re.compile(r"^([a-z]+):(\d+)$")


def test_kustomize_is_the_pinned_version() -> None:
    assert kustomize("version").strip() == pinned_kustomize_version()


@pytest.mark.parametrize("copy", sorted(COPIES))
def test_base_files_are_the_projects_files_byte_for_byte(copy: str) -> None:
    ours = (DEPLOY / "base" / "files" / copy).read_bytes()
    assert ours == COPIES[copy].read_bytes(), (
        f"deploy/kubernetes/base/files/{copy} differs from "
        f"{COPIES[copy].relative_to(REPO_ROOT)}: copy it again"
    )


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_is_valid_kubernetes_1_35(rendered: Rendered, overlay: str) -> None:
    assert rendered[overlay], f"{overlay} rendered nothing"
    assert schema_problems(rendered[overlay]) == []


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_follows_the_project_rules(rendered: Rendered, overlay: str) -> None:
    assert problems(rendered[overlay]) == []


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_shop_service_jaeger_and_nats_runs(rendered: Rendered, overlay: str) -> None:
    names = {name_of(manifest) for manifest in workloads(rendered[overlay])}
    assert names == {*SERVICES, "jaeger", "nats"}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_stores_are_single_writer_statefulsets(rendered: Rendered, overlay: str) -> None:
    """SQLite (orders, payments, notifications), bbolt (inventory) and the
    JetStream store (NATS) each keep one volume and one writer."""
    for name in ("orders", "inventory", "payments", "notifications", "nats"):
        stateful = find(rendered[overlay], "StatefulSet", name)
        assert stateful is not None, f"{name} is not a StatefulSet"
        assert stateful["spec"]["replicas"] == 1
        claims = [claim["metadata"]["name"] for claim in stateful["spec"]["volumeClaimTemplates"]]
        mounts = [mount["name"] for mount in main_container(stateful)["volumeMounts"]]
        assert claims == ["data"]
        assert "data" in mounts


def test_local_runs_one_replica_each_from_images_on_the_node(rendered: Rendered) -> None:
    for manifest in workloads(rendered["local"]):
        assert manifest["spec"]["replicas"] == 1, ident(manifest)
        container = main_container(manifest)
        shop_image = container["image"].startswith("shopmesh/")
        assert container["imagePullPolicy"] == ("Never" if shop_image else "IfNotPresent")


def test_production_scales_the_stateless_services(rendered: Rendered) -> None:
    manifests = rendered["production"]
    assert {name_of(d) for d in stateless_services(manifests)} == {"gateway", "catalog"}
    assert stateless_problems(manifests) == []
    for deployment in stateless_services(manifests):
        spread = pod_spec(deployment).get("topologySpreadConstraints", [])
        keys = {constraint["topologyKey"] for constraint in spread}
        assert keys == {"topology.kubernetes.io/zone", "kubernetes.io/hostname"}


def test_base_pulls_if_not_present() -> None:
    for manifest in workloads(render(DEPLOY / "base")):
        for container in containers(manifest):
            assert container["imagePullPolicy"] == "IfNotPresent", ident(manifest)


def _compose() -> dict[str, Any]:
    compose: dict[str, Any] = yaml.safe_load((REPO_ROOT / "compose.yaml").read_text())
    return compose


def _expected(key: str, raw: str) -> Any:
    """What a compose variable becomes on Kubernetes: a `${KEY:-}` key from the
    shop-keys Secret, an upstream `service:port` by its headless Service."""
    value = raw
    interpolated = _INTERPOLATION.match(raw)
    if interpolated is not None:
        if interpolated.group(2) == "":
            return {"secretKeyRef": {"name": "shop-keys", "key": interpolated.group(1)}}
        value = interpolated.group(2)
    address = _SERVICE_ADDRESS.match(value)
    if address is not None and address.group(1) in SERVICES and key != "GRPC_LISTEN_ADDR":
        return f"dns:///{address.group(1)}-headless:{address.group(2)}"
    return value


@pytest.mark.parametrize("service", SERVICES)
def test_services_are_configured_as_in_compose(rendered: Rendered, service: str) -> None:
    manifests = rendered["local"]
    entry = _compose()["services"][service]
    container = main_container(workload(manifests, service))
    assert container["image"] == entry["image"]
    env = environment(manifests, container)
    for key, raw in entry["environment"].items():
        assert env.get(key) == _expected(key, str(raw)), f"{service}: {key}"
    # Kubernetes' native gRPC probes: on the port compose probes where that
    # is plaintext (the gateway's), else on the health-only plaintext port
    # (MESH_HEALTH_PROBE_ADDRESS), which compose does not need: its
    # healthcheck is the image's own probe over mTLS.
    healthcheck = entry["healthcheck"]["test"]
    if "--plaintext" in healthcheck:
        port = int(healthcheck[-1].rsplit(":", 1)[1])
    else:
        port = int(env["MESH_HEALTH_PROBE_ADDRESS"].rsplit(":", 1)[1])
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["grpc"] == {"port": port}, f"{service}: {probe}"
    assert port in {p["containerPort"] for p in container["ports"]}
    exposed = {int(port) for port in entry.get("expose", [])}
    exposed |= {int(str(port).rsplit(":", 1)[-1]) for port in entry.get("ports", [])}
    assert exposed <= {port["containerPort"] for port in container["ports"]}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_upstream_targets_name_headless_services(rendered: Rendered, overlay: str) -> None:
    manifests = rendered[overlay]
    targets = [
        value
        for manifest in workloads(manifests)
        for value in environment(manifests, main_container(manifest)).values()
        if isinstance(value, str) and value.startswith("dns:///")
    ]
    assert len(targets) == 6  # gateway's three routes, orders' three upstreams
    for target in targets:
        host, port = target.removeprefix("dns:///").rsplit(":", 1)
        service = find(manifests, "Service", host)
        assert service is not None, target
        assert service["spec"]["clusterIP"] == "None", target
        assert int(port) in {entry["port"] for entry in service["spec"]["ports"]}, target


@pytest.mark.parametrize("service", SERVICES)
def test_each_pod_holds_only_its_own_identity(rendered: Rendered, service: str) -> None:
    manifests = rendered["production"]
    manifest = workload(manifests, service)
    container = main_container(manifest)
    certs_dir = environment(manifests, container)["MESH_CERTS_DIR"]
    mount = next(m for m in container["volumeMounts"] if m["mountPath"] == certs_dir)
    volume = next(v for v in pod_spec(manifest)["volumes"] if v["name"] == mount["name"])
    assert volume["secret"]["secretName"] == "mesh-certs"
    items = {item["key"]: item["path"] for item in volume["secret"]["items"]}
    assert items == {name: name for name in ("ca.pem", f"{service}.pem", f"{service}.key")}
    # No key in the repository: the Secret comes from `make certs` output.
    assert find(manifests, "Secret", "mesh-certs") is None


@pytest.mark.parametrize("service", SERVICES)
def test_policy_files_are_mounted_where_the_service_reads_them(
    rendered: Rendered, service: str
) -> None:
    manifests = rendered["production"]
    manifest = workload(manifests, service)
    container = main_container(manifest)
    env = environment(manifests, container)
    for variable, copy in (
        ("MESH_POLICY_FILE", "policy.yaml"),
        ("MESH_TRAFFIC_FILE", "traffic.yaml"),
    ):
        directory, _, filename = env[variable].rpartition("/")
        mount = next(m for m in container["volumeMounts"] if m["mountPath"] == directory)
        volume = next(v for v in pod_spec(manifest)["volumes"] if v["name"] == mount["name"])
        config_map = find(manifests, "ConfigMap", volume["configMap"]["name"])
        assert config_map is not None
        assert config_map["data"][filename] == COPIES[copy].read_text()


@pytest.mark.parametrize("service", SERVICES)
def test_termination_grace_covers_the_drain(rendered: Rendered, service: str) -> None:
    """SIGTERM, then health NOT_SERVING for the drain, calls in flight for
    the grace, then the telemetry flush: all before the kubelet's SIGKILL."""
    manifests = rendered["production"]
    manifest = workload(manifests, service)
    env = environment(manifests, main_container(manifest))
    literal = {key: value for key, value in env.items() if isinstance(value, str)}
    # The server's own reading of its environment (mTLS off: no files here).
    config = ServerConfig.from_env(Env({**literal, "MESH_MTLS": "off"}), "0.0.0.0:0")
    needed = config.drain_s + config.grace_s + TELEMETRY_FLUSH_S
    assert config.drain_s >= 5  # long enough for endpoints and DNS to drop the pod
    assert pod_spec(manifest)["terminationGracePeriodSeconds"] > needed


def test_the_namespace_enforces_restricted(rendered: Rendered) -> None:
    for overlay in OVERLAYS:
        (namespace,) = of_kind(rendered[overlay], "Namespace")
        labels = namespace["metadata"]["labels"]
        assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
        others = [m for m in rendered[overlay] if m["kind"] != "Namespace"]
        assert {m["metadata"]["namespace"] for m in others} == {name_of(namespace)}
