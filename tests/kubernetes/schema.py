"""Kubernetes' own schemas, offline: kubernetes-validate (a dev dependency)
bundles the OpenAPI schemas of each release, and its strict form refuses any
field the release does not know, as `kubectl apply --validate=strict` does."""

from __future__ import annotations

from typing import Any

# kubernetes-validate ships no type information (no py.typed); its one
# function used here is wrapped below with the types it has.
from kubernetes_validate import utils as _kubernetes_validate  # type: ignore[import-untyped]

from tests.kubernetes.manifests import KUBERNETES_VERSION, Manifest, ident


def schema_problem(manifest: Manifest, version: str = KUBERNETES_VERSION) -> str | None:
    """Why `manifest` is not a valid object of Kubernetes `version` (strict), or None."""
    try:
        _kubernetes_validate.validate(manifest, version, strict=True)
    except _kubernetes_validate.ValidationError as error:
        path = ".".join(str(part) for part in error.absolute_path) or "(top level)"
        return f"{ident(manifest)}: {path}: {error.message}"
    except _kubernetes_validate.SchemaNotFoundError as error:
        return f"{ident(manifest)}: {error.message}"
    return None


def schema_problems(manifests: list[Manifest], version: str = KUBERNETES_VERSION) -> list[str]:
    found: list[Any] = [schema_problem(manifest, version) for manifest in manifests]
    return [problem for problem in found if problem is not None]
