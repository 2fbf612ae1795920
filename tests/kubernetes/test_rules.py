"""The checks can fail: each test breaks one thing in a copy of a rendered
overlay and expects the rule checker (or the schema check) to name it.
Without these, an empty problem list could mean a checker that sees nothing."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.kubernetes.manifests import (
    Manifest,
    find,
    main_container,
    pod_spec,
    require,
    workload,
)
from tests.kubernetes.rules import image_problem, problems, stateless_problems
from tests.kubernetes.schema import schema_problems

Rendered = dict[str, list[Manifest]]
Breakage = Callable[[list[Manifest]], None]


def _no_cpu_limit(manifests: list[Manifest]) -> None:
    del main_container(workload(manifests, "catalog"))["resources"]["limits"]["cpu"]


def _no_limits(manifests: list[Manifest]) -> None:
    del main_container(workload(manifests, "inventory"))["resources"]["limits"]


def _no_readiness(manifests: list[Manifest]) -> None:
    del main_container(workload(manifests, "payments"))["readinessProbe"]


def _no_liveness(manifests: list[Manifest]) -> None:
    del main_container(workload(manifests, "jaeger"))["livenessProbe"]


def _latest(manifests: list[Manifest]) -> None:
    main_container(workload(manifests, "orders"))["image"] = "shopmesh/orders:latest"


def _untagged(manifests: list[Manifest]) -> None:
    main_container(workload(manifests, "nats"))["image"] = "nats"


def _always_pull(manifests: list[Manifest]) -> None:
    main_container(workload(manifests, "gateway"))["imagePullPolicy"] = "Always"


def _root(manifests: list[Manifest]) -> None:
    pod_spec(workload(manifests, "notifications"))["securityContext"]["runAsUser"] = 0


def _may_run_as_root(manifests: list[Manifest]) -> None:
    del pod_spec(workload(manifests, "catalog"))["securityContext"]["runAsNonRoot"]


def _escalation(manifests: list[Manifest]) -> None:
    main_container(workload(manifests, "catalog"))["securityContext"][
        "allowPrivilegeEscalation"
    ] = True


def _writable_root(manifests: list[Manifest]) -> None:
    del main_container(workload(manifests, "inventory"))["securityContext"][
        "readOnlyRootFilesystem"
    ]


def _capabilities_kept(manifests: list[Manifest]) -> None:
    main_container(workload(manifests, "payments"))["securityContext"]["capabilities"] = {
        "drop": ["NET_RAW"]
    }


def _unconfined(manifests: list[Manifest]) -> None:
    pod_spec(workload(manifests, "gateway"))["securityContext"]["seccompProfile"] = {
        "type": "Unconfined"
    }


def _host_path(manifests: list[Manifest]) -> None:
    pod_spec(workload(manifests, "orders"))["volumes"].append(
        {"name": "host", "hostPath": {"path": "/var/run"}}
    )


def _no_headless(manifests: list[Manifest]) -> None:
    manifests.remove(require(manifests, "Service", "catalog-headless"))


def _headless_with_address(manifests: list[Manifest]) -> None:
    service = find(manifests, "Service", "inventory-headless")
    assert service is not None
    service["spec"]["clusterIP"] = "10.0.0.10"


def _exec_probe(manifests: list[Manifest]) -> None:
    main_container(workload(manifests, "payments"))["readinessProbe"] = {
        "exec": {"command": ["node", "probe.js"]}
    }


def _probe_on_undeclared_port(manifests: list[Manifest]) -> None:
    main_container(workload(manifests, "orders"))["livenessProbe"] = {"grpc": {"port": 9999}}


def _selector_misses_pods(manifests: list[Manifest]) -> None:
    workload(manifests, "orders")["spec"]["selector"]["matchLabels"] = {
        "app.kubernetes.io/name": "order"
    }


def _service_selects_nothing(manifests: list[Manifest]) -> None:
    service = find(manifests, "Service", "payments")
    assert service is not None
    service["spec"]["selector"] = {"app.kubernetes.io/name": "payment"}


BREAKAGES: dict[str, tuple[Breakage, str]] = {
    "no CPU limit": (_no_cpu_limit, "container catalog: no cpu in resources.limits"),
    "no limits at all": (_no_limits, "container inventory: no memory in resources.limits"),
    "no readiness probe": (_no_readiness, "container payments: no readinessProbe"),
    "no liveness probe": (_no_liveness, "container jaeger: no livenessProbe"),
    "exec probe": (
        _exec_probe,
        "StatefulSet/payments: readinessProbe is not Kubernetes' native grpc probe",
    ),
    "probe port": (_probe_on_undeclared_port, "StatefulSet/orders: livenessProbe probes port 9999"),
    "latest tag": (_latest, "image shopmesh/orders:latest is tagged latest"),
    "no tag": (_untagged, "image nats has no tag"),
    "pull always": (_always_pull, "container gateway: imagePullPolicy is Always"),
    "root uid": (_root, "container notifications: runAsUser is 0"),
    "may run as root": (_may_run_as_root, "container catalog: runAsNonRoot is not true"),
    "escalation": (_escalation, "container catalog: allowPrivilegeEscalation is not false"),
    "writable root": (_writable_root, "container inventory: readOnlyRootFilesystem is not true"),
    "capabilities": (_capabilities_kept, "payments: capabilities.drop does not include ALL"),
    "unconfined": (_unconfined, "container gateway: seccompProfile is Unconfined"),
    "hostPath": (_host_path, "StatefulSet/orders: volume host is ['hostPath']"),
    "no headless": (_no_headless, "catalog: no Service catalog-headless"),
    "headless with IP": (_headless_with_address, "Service/inventory-headless: not headless"),
    "selector": (_selector_misses_pods, "StatefulSet/orders: selector"),
    "service": (_service_selects_nothing, "Service/payments: its selector selects no"),
}


@pytest.mark.parametrize("breakage", sorted(BREAKAGES))
def test_the_rules_name_what_was_broken(fresh: Rendered, breakage: str) -> None:
    manifests = fresh["local"]
    assert problems(manifests) == []
    breaking, expected = BREAKAGES[breakage]
    breaking(manifests)
    found = problems(manifests)
    assert any(expected in problem for problem in found), found


def test_production_without_an_autoscaler_or_budget_fails(fresh: Rendered) -> None:
    manifests = fresh["production"]
    manifests.remove(require(manifests, "HorizontalPodAutoscaler", "catalog"))
    manifests.remove(require(manifests, "PodDisruptionBudget", "gateway"))
    workload(manifests, "catalog")["spec"]["replicas"] = 3
    found = stateless_problems(manifests)
    assert "Deployment/catalog: no HorizontalPodAutoscaler" in found
    assert "Deployment/gateway: no PodDisruptionBudget selects its pods" in found
    assert any("Deployment/catalog: sets replicas" in problem for problem in found)


def test_an_autoscaler_of_a_missing_deployment_fails(fresh: Rendered) -> None:
    manifests = fresh["production"]
    scaler = find(manifests, "HorizontalPodAutoscaler", "gateway")
    assert scaler is not None
    scaler["spec"]["scaleTargetRef"]["name"] = "gatway"
    assert any("Deployment/gatway does not exist" in p for p in problems(manifests))


@pytest.mark.parametrize(
    ("image", "pinned"),
    [
        ("shopmesh/catalog:dev", True),
        ("registry.example.com:5000/shopmesh/catalog:1.2.3", True),
        ("registry.example.com:5000/shopmesh/catalog", False),
        ("nats@sha256:" + "0" * 64, True),
        ("nats:latest", False),
    ],
)
def test_a_registry_port_is_not_a_tag(image: str, pinned: bool) -> None:
    assert (image_problem(image) is None) == pinned


def test_the_schema_check_refuses_an_unknown_field(fresh: Rendered) -> None:
    manifests = fresh["local"]
    container = main_container(workload(manifests, "catalog"))
    container["livenessprobe"] = container.pop("livenessProbe")  # a typo kubectl would refuse
    found = schema_problems([workload(manifests, "catalog")])
    assert len(found) == 1
    assert "livenessprobe" in found[0]


def test_the_schema_check_refuses_a_wrong_type(fresh: Rendered) -> None:
    manifests = fresh["local"]
    workload(manifests, "orders")["spec"]["replicas"] = "one"
    found = schema_problems([workload(manifests, "orders")])
    assert found
    assert "spec.replicas" in found[0]
