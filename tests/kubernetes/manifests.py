"""Rendering the overlays of deploy/kubernetes, and reading what they render.

`render` runs the pinned kustomize (`make tools` builds it into .tools/bin)
and parses its output into one dict per Kubernetes object. The accessors
below read those dicts the way the rules and tests need them: pod templates
of workloads, containers, a container's environment with its `envFrom`
ConfigMaps folded in.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import yaml

from localmode.topology import REPO_ROOT

Manifest = dict[str, Any]

KUSTOMIZE = REPO_ROOT / ".tools" / "bin" / "kustomize"
DEPLOY = REPO_ROOT / "deploy" / "kubernetes"
OVERLAYS = ("local", "production")
WORKLOAD_KINDS = ("Deployment", "StatefulSet")
# The Kubernetes release the manifests must be valid for (the control plane
# of issue 12's cluster test).
KUBERNETES_VERSION = "1.35.0"


class KustomizeMissing(Exception):
    """.tools/bin/kustomize is not there: `make tools` builds it."""


def pinned_kustomize_version() -> str:
    """The kustomize version tools/kustomize/go.mod pins, e.g. `v5.8.2`."""
    go_mod = (REPO_ROOT / "tools" / "kustomize" / "go.mod").read_text()
    found = re.search(r"^\s*sigs\.k8s\.io/kustomize/kustomize/v5 (v\S+)", go_mod, re.MULTILINE)
    if found is None:
        raise AssertionError("tools/kustomize/go.mod pins no sigs.k8s.io/kustomize/kustomize/v5")
    return found.group(1)


def kustomize(*args: str) -> str:
    if not KUSTOMIZE.exists():
        raise KustomizeMissing(f"{KUSTOMIZE} is missing: run 'make tools'")
    result = subprocess.run(
        [str(KUSTOMIZE), *args], capture_output=True, text=True, timeout=120, check=False
    )
    if result.returncode != 0:
        raise AssertionError(f"kustomize {' '.join(args)} failed:\n{result.stderr}")
    return result.stdout


def render(path: Path) -> list[Manifest]:
    """`kustomize build path`, one dict per object."""
    return [doc for doc in yaml.safe_load_all(kustomize("build", str(path))) if doc]


def render_overlay(overlay: str) -> list[Manifest]:
    return render(DEPLOY / "overlays" / overlay)


def name_of(manifest: Manifest) -> str:
    return str(manifest["metadata"]["name"])


def ident(manifest: Manifest) -> str:
    """`Kind/name`, how problems name an object."""
    return f"{manifest['kind']}/{name_of(manifest)}"


def find(manifests: Sequence[Manifest], kind: str, name: str) -> Manifest | None:
    for manifest in manifests:
        if manifest["kind"] == kind and name_of(manifest) == name:
            return manifest
    return None


def require(manifests: Sequence[Manifest], kind: str, name: str) -> Manifest:
    """The `kind` called `name`, which must exist."""
    found = find(manifests, kind, name)
    if found is None:
        raise AssertionError(f"no {kind}/{name}")
    return found


def of_kind(manifests: Sequence[Manifest], *kinds: str) -> list[Manifest]:
    return [manifest for manifest in manifests if manifest["kind"] in kinds]


def workloads(manifests: Sequence[Manifest]) -> list[Manifest]:
    return of_kind(manifests, *WORKLOAD_KINDS)


def workload(manifests: Sequence[Manifest], name: str) -> Manifest:
    """The Deployment or StatefulSet called `name` (one must exist)."""
    for kind in WORKLOAD_KINDS:
        found = find(manifests, kind, name)
        if found is not None:
            return found
    raise AssertionError(f"no Deployment or StatefulSet named {name}")


def pod_spec(manifest: Manifest) -> dict[str, Any]:
    spec: dict[str, Any] = manifest["spec"]["template"]["spec"]
    return spec


def pod_labels(manifest: Manifest) -> dict[str, str]:
    labels: dict[str, str] = manifest["spec"]["template"]["metadata"].get("labels", {})
    return labels


def containers(manifest: Manifest) -> Iterator[dict[str, Any]]:
    """Every container of a workload's pods, init containers included."""
    spec = pod_spec(manifest)
    yield from spec.get("initContainers", [])
    yield from spec.get("containers", [])


def main_container(manifest: Manifest) -> dict[str, Any]:
    """The container named as its workload (each pod here runs one)."""
    for container in pod_spec(manifest)["containers"]:
        if container["name"] == name_of(manifest):
            found: dict[str, Any] = container
            return found
    raise AssertionError(f"{ident(manifest)} has no container named {name_of(manifest)}")


def environment(manifests: Sequence[Manifest], container: dict[str, Any]) -> dict[str, Any]:
    """The container's variables: `envFrom` ConfigMaps' data, then `env` over
    them (Kubernetes' order). A literal value is a str; a `valueFrom` stays a dict."""
    merged: dict[str, Any] = {}
    for source in container.get("envFrom", []):
        reference = source.get("configMapRef")
        if reference is None:
            continue
        config_map = find(manifests, "ConfigMap", reference["name"])
        if config_map is None:
            raise AssertionError(f"envFrom names a missing ConfigMap {reference['name']}")
        merged.update(config_map.get("data", {}))
    for variable in container.get("env", []):
        merged[variable["name"]] = variable.get("value", variable.get("valueFrom"))
    return merged


def selector_matches(selector: dict[str, Any] | None, labels: dict[str, str]) -> bool:
    """Whether a label selector's matchLabels (all this project uses) select `labels`;
    an empty or missing selector selects nothing here, never everything."""
    if not selector:
        return False
    if selector.get("matchExpressions"):
        raise AssertionError("matchExpressions are not used here; extend selector_matches")
    match = selector.get("matchLabels", selector)
    return bool(match) and all(labels.get(key) == value for key, value in match.items())
