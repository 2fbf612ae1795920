"""Offline checks of deploy/kubernetes: rendered by the pinned kustomize,
validated against Kubernetes' schemas, held to the project's own rules."""
