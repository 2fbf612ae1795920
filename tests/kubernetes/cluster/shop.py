"""The shop on the cluster as a user would put it there (the README's "Run on
Kubernetes" with overlays/local): the two Secrets made by the project's own
commands, `kubectl apply -k`, every rollout waited for; then reached only
through `kubectl port-forward` to 127.0.0.1."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import yaml

from localmode.topology import REPO_ROOT
from mesh.pki import SERVICES
from tests.kubernetes.cluster.node import Node
from tests.kubernetes.manifests import render_overlay
from tests.shop_calls import read_env_file

NAMESPACE = "shopmesh"
OVERLAY = REPO_ROOT / "deploy" / "kubernetes" / "overlays" / "local"
ROLLOUT_TIMEOUT_S = 300


def claims() -> list[str]:
    """The PersistentVolumeClaims the local overlay's StatefulSets will make."""
    names = []
    for manifest in render_overlay("local"):
        if manifest["kind"] != "StatefulSet":
            continue
        spec = manifest["spec"]
        for template in spec.get("volumeClaimTemplates", []):
            for ordinal in range(spec.get("replicas", 1)):
                names.append(
                    f"{template['metadata']['name']}-{manifest['metadata']['name']}-{ordinal}"
                )
    return names


def persistent_volumes(node: Node) -> str:
    """One hostPath volume per claim, bound to it by claimRef: a single node
    has no storage provisioner. World-writable folders, because a hostPath
    volume gets no fsGroup ownership and each image runs as its own user."""
    documents = []
    for claim in claims():
        folder = node.layout.volumes / claim
        folder.mkdir(parents=True, exist_ok=True)
        folder.chmod(0o777)
        documents.append(
            {
                "apiVersion": "v1",
                "kind": "PersistentVolume",
                "metadata": {"name": f"shopmesh-{claim}"},
                "spec": {
                    "capacity": {"storage": "1Gi"},
                    "accessModes": ["ReadWriteOnce"],
                    "persistentVolumeReclaimPolicy": "Delete",
                    "claimRef": {"namespace": NAMESPACE, "name": claim},
                    "hostPath": {"path": str(folder), "type": "Directory"},
                },
            }
        )
    return yaml.safe_dump_all(documents)


def deploy(node: Node, workdir: Path) -> dict[str, str]:
    """Applies overlays/local with its Secrets; returns the keys of its .env."""
    node.kubectl("apply", "-f", "-", stdin=persistent_volumes(node))
    node.kubectl("apply", "-k", str(OVERLAY), timeout_s=180)
    certs = workdir / "certs"
    env = {**os.environ, "MESH_CERTS_DIR": str(certs)}
    subprocess.run([sys.executable, "-m", "mesh.certs"], env=env, check=True, timeout=60)
    files = [f"--from-file={certs / 'ca.pem'}"]
    for service in SERVICES:
        files += [
            f"--from-file={certs / f'{service}.pem'}",
            f"--from-file={certs / f'{service}.key'}",
        ]
    node.kubectl("-n", NAMESPACE, "create", "secret", "generic", "mesh-certs", *files)
    dotenv = workdir / ".env"
    make_env = REPO_ROOT / "scripts" / "docker" / "make-env.py"
    subprocess.run([sys.executable, str(make_env), str(dotenv)], check=True, timeout=30)
    node.kubectl(
        "-n", NAMESPACE, "create", "secret", "generic", "shop-keys", f"--from-env-file={dotenv}"
    )
    wait_for_rollouts(node)
    return read_env_file(dotenv)


def workloads(node: Node) -> list[str]:
    out = node.kubectl("-n", NAMESPACE, "get", "deployments,statefulsets", "-o", "name").stdout
    return out.split()


def wait_for_rollouts(node: Node) -> None:
    for workload in workloads(node):
        node.kubectl(
            "-n",
            NAMESPACE,
            "rollout",
            "status",
            workload,
            f"--timeout={ROLLOUT_TIMEOUT_S}s",
            timeout_s=ROLLOUT_TIMEOUT_S + 30,
        )


FORWARDING = re.compile(r"Forwarding from 127\.0\.0\.1:(\d+) ->")


@contextmanager
def port_forward(node: Node, target: str, port: int) -> Iterator[str]:
    """`kubectl port-forward` of `target` (svc/gateway) to a free port on
    127.0.0.1; yields host:port, stops the kubectl by its PID afterwards."""
    argv = [
        node.layout.program("kubectl"),
        f"--kubeconfig={node.layout.kubeconfig}",
        "-n",
        NAMESPACE,
        "port-forward",
        "--address=127.0.0.1",
        target,
        f":{port}",
    ]
    child = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert child.stdout is not None
        deadline = time.monotonic() + 30
        local = None
        said = []
        while local is None and time.monotonic() < deadline:
            line = child.stdout.readline()
            if not line:
                break
            said.append(line)
            match = FORWARDING.search(line)
            if match:
                local = match.group(1)
        if local is None:
            output = "".join(said)
            raise RuntimeError(f"kubectl port-forward {target} did not start: {output}")
        # It prints a line for every connection: keep reading, or a full
        # pipe stops it.
        reader = threading.Thread(target=child.stdout.read, daemon=True)
        reader.start()
        yield f"127.0.0.1:{local}"
    finally:
        child.terminate()
        try:
            child.wait(timeout=10)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
        if child.stdout is not None:
            child.stdout.close()
