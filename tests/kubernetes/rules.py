"""The project's own rules for its Kubernetes manifests, beyond the schemas.

`problems(manifests)` returns one line per broken rule (empty: all kept), so
a test shows every problem at once and the negative tests can ask for the
one they broke. The rules:

- every container has a liveness and a readiness probe, CPU and memory
  requests and limits, a pinned image (a tag or a digest, never `latest`)
  and an explicit pull policy other than Always;
- every pod passes Pod Security `restricted` (non-root with a numeric uid,
  RuntimeDefault seccomp, no privilege escalation, every capability dropped,
  no host namespaces, ports or paths, only the volume types it allows), and
  every container's root filesystem is read-only;
- every workload's selector selects its own pod labels; every Service,
  PodDisruptionBudget and HorizontalPodAutoscaler selects or targets
  something that exists; a StatefulSet's serviceName is a headless Service;
- each of the shop's gRPC services (mesh.certs.SERVICES) runs as a workload
  of its name with a `<name>` Service and a headless `<name>-headless`
  Service, both exposing the container's gRPC port, and is probed by
  Kubernetes' native `grpc:` probes on a port its container declares;
- `stateless_problems` (production): each stateless shop service (a
  Deployment) has a HorizontalPodAutoscaler of at least two replicas, a
  PodDisruptionBudget, and no replica count of its own for `kubectl apply`
  to reset.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from mesh.certs import SERVICES
from tests.kubernetes.manifests import (
    Manifest,
    containers,
    find,
    ident,
    name_of,
    of_kind,
    pod_labels,
    pod_spec,
    selector_matches,
    workloads,
)

# Pod Security `restricted` allows only these volume types.
RESTRICTED_VOLUMES = frozenset(
    {
        "configMap",
        "csi",
        "downwardAPI",
        "emptyDir",
        "ephemeral",
        "persistentVolumeClaim",
        "projected",
        "secret",
    }
)
PULL_POLICIES = ("IfNotPresent", "Never")


def problems(manifests: Sequence[Manifest]) -> list[str]:
    found: list[str] = []
    for manifest in workloads(manifests):
        found += _selector_problems(manifest)
        found += _pod_security_problems(manifest)
        for container in containers(manifest):
            where = f"{ident(manifest)} container {container['name']}"
            found += [f"{where}: {problem}" for problem in _container_problems(container)]
    found += _reference_problems(manifests)
    found += _grpc_service_problems(manifests)
    return found


def image_problem(image: str) -> str | None:
    """Why `image` is not pinned, or None. A registry's port is not a tag."""
    if "@sha256:" in image:
        return None
    last = image.rsplit("/", 1)[-1]
    if ":" not in last:
        return f"image {image} has no tag"
    if last.rsplit(":", 1)[1] == "latest":
        return f"image {image} is tagged latest"
    return None


def _container_problems(container: dict[str, Any]) -> Iterator[str]:
    for probe in ("livenessProbe", "readinessProbe"):
        if not container.get(probe):
            yield f"no {probe}"
    resources = container.get("resources", {})
    for bound in ("requests", "limits"):
        for resource in ("cpu", "memory"):
            if resource not in resources.get(bound, {}):
                yield f"no {resource} in resources.{bound}"
    image = container.get("image", "")
    problem = image_problem(image)
    if problem is not None:
        yield problem
    if container.get("imagePullPolicy") not in PULL_POLICIES:
        yield f"imagePullPolicy is {container.get('imagePullPolicy')}, not one of {PULL_POLICIES}"
    context = container.get("securityContext", {})
    if context.get("allowPrivilegeEscalation") is not False:
        yield "allowPrivilegeEscalation is not false"
    if context.get("privileged"):
        yield "privileged"
    if context.get("readOnlyRootFilesystem") is not True:
        yield "readOnlyRootFilesystem is not true"
    capabilities = context.get("capabilities", {})
    if "ALL" not in capabilities.get("drop", []):
        yield "capabilities.drop does not include ALL"
    if capabilities.get("add"):
        yield f"adds capabilities {capabilities['add']}"
    for port in container.get("ports", []):
        if port.get("hostPort"):
            yield f"hostPort {port['hostPort']}"


def _pod_security_problems(manifest: Manifest) -> Iterator[str]:
    spec = pod_spec(manifest)
    pod = spec.get("securityContext", {})
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(key):
            yield f"{ident(manifest)}: {key}"
    for volume in spec.get("volumes", []):
        kinds = set(volume) - {"name"}
        if not kinds <= RESTRICTED_VOLUMES:
            yield f"{ident(manifest)}: volume {volume['name']} is {sorted(kinds)}"
    for container in containers(manifest):
        where = f"{ident(manifest)} container {container['name']}"
        own = container.get("securityContext", {})
        # The container's setting wins over the pod's, as in Kubernetes.
        non_root = own.get("runAsNonRoot", pod.get("runAsNonRoot"))
        user = own.get("runAsUser", pod.get("runAsUser"))
        seccomp = own.get("seccompProfile", pod.get("seccompProfile", {}))
        if non_root is not True:
            yield f"{where}: runAsNonRoot is not true"
        # An image whose USER is a name cannot be checked for non-root by
        # the kubelet: it refuses to start it without a numeric runAsUser.
        if not isinstance(user, int) or user == 0:
            yield f"{where}: runAsUser is {user}, not a non-zero uid"
        if seccomp.get("type") not in ("RuntimeDefault", "Localhost"):
            yield f"{where}: seccompProfile is {seccomp.get('type')}, not RuntimeDefault"


def _selector_problems(manifest: Manifest) -> Iterator[str]:
    selector = manifest["spec"].get("selector")
    if not selector_matches(selector, pod_labels(manifest)):
        labels = pod_labels(manifest)
        yield f"{ident(manifest)}: selector {selector} does not select its pods {labels}"


def _selects_a_workload(manifests: Sequence[Manifest], selector: dict[str, Any] | None) -> bool:
    return any(selector_matches(selector, pod_labels(w)) for w in workloads(manifests))


def _reference_problems(manifests: Sequence[Manifest]) -> Iterator[str]:
    for service in of_kind(manifests, "Service"):
        if not _selects_a_workload(manifests, service["spec"].get("selector")):
            yield f"{ident(service)}: its selector selects no workload's pods"
    for budget in of_kind(manifests, "PodDisruptionBudget"):
        if not _selects_a_workload(manifests, budget["spec"].get("selector")):
            yield f"{ident(budget)}: its selector selects no workload's pods"
    for scaler in of_kind(manifests, "HorizontalPodAutoscaler"):
        target = scaler["spec"]["scaleTargetRef"]
        if find(manifests, target["kind"], target["name"]) is None:
            yield f"{ident(scaler)}: its target {target['kind']}/{target['name']} does not exist"
    for stateful in of_kind(manifests, "StatefulSet"):
        governing = find(manifests, "Service", stateful["spec"].get("serviceName", ""))
        if governing is None or governing["spec"].get("clusterIP") != "None":
            yield f"{ident(stateful)}: serviceName is not a headless Service"


# The plaintext health-only port of the services whose gRPC port is mTLS
# (MESH_HEALTH_PROBE_ADDRESS): not the port the Services expose.
HEALTH_PORT_NAME = "grpc-health"


def _grpc_port(manifest: Manifest) -> int | None:
    for container in pod_spec(manifest)["containers"]:
        for port in container.get("ports", []):
            name = port.get("name", "")
            if "grpc" in name and name != HEALTH_PORT_NAME:
                return int(port["containerPort"])
    return None


def _probe_problems(manifest: Manifest) -> Iterator[str]:
    container = pod_spec(manifest)["containers"][0]
    declared = {port["containerPort"] for port in container.get("ports", [])}
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        action = container.get(probe, {}).get("grpc")
        if action is None:
            yield f"{ident(manifest)}: {probe} is not Kubernetes' native grpc probe"
        elif action.get("port") not in declared:
            yield f"{ident(manifest)}: {probe} probes port {action.get('port')}, not declared"


def _service_exposes(service: Manifest, port: int) -> bool:
    return any(entry.get("port") == port for entry in service["spec"].get("ports", []))


def _grpc_service_problems(manifests: Sequence[Manifest]) -> Iterator[str]:
    for name in SERVICES:
        found = [w for w in workloads(manifests) if name_of(w) == name]
        if not found:
            yield f"{name}: no Deployment or StatefulSet"
            continue
        yield from _probe_problems(found[0])
        port = _grpc_port(found[0])
        if port is None:
            yield f"{ident(found[0])}: no container port named for gRPC"
            continue
        for service_name, headless in ((name, False), (f"{name}-headless", True)):
            service = find(manifests, "Service", service_name)
            if service is None:
                yield f"{name}: no Service {service_name}"
                continue
            if headless and service["spec"].get("clusterIP") != "None":
                yield f"{ident(service)}: not headless (clusterIP: None)"
            if not headless and service["spec"].get("clusterIP") == "None":
                yield f"{ident(service)}: headless, where a normal Service is wanted"
            if not selector_matches(service["spec"].get("selector"), pod_labels(found[0])):
                yield f"{ident(service)}: does not select {name}'s pods"
            if not _service_exposes(service, port):
                yield f"{ident(service)}: does not expose the gRPC port {port}"


def stateless_services(manifests: Sequence[Manifest]) -> list[Manifest]:
    """The shop's services that run as Deployments: the ones that scale."""
    return [m for m in of_kind(manifests, "Deployment") if name_of(m) in SERVICES]


def stateless_problems(manifests: Sequence[Manifest]) -> list[str]:
    found: list[str] = []
    budgets = of_kind(manifests, "PodDisruptionBudget")
    scalers = of_kind(manifests, "HorizontalPodAutoscaler")
    for deployment in stateless_services(manifests):
        where = ident(deployment)
        labels = pod_labels(deployment)
        if not any(selector_matches(b["spec"].get("selector"), labels) for b in budgets):
            found.append(f"{where}: no PodDisruptionBudget selects its pods")
        targeting = [
            s
            for s in scalers
            if s["spec"]["scaleTargetRef"]["kind"] == "Deployment"
            and s["spec"]["scaleTargetRef"]["name"] == name_of(deployment)
        ]
        if not targeting:
            found.append(f"{where}: no HorizontalPodAutoscaler")
        for scaler in targeting:
            if scaler["spec"].get("minReplicas", 1) < 2:
                found.append(f"{ident(scaler)}: minReplicas below 2")
        if "replicas" in deployment["spec"]:
            found.append(f"{where}: sets replicas, which its HorizontalPodAutoscaler owns")
    if not stateless_services(manifests):
        found.append("no shop service runs as a Deployment")
    return found
