"""Where the single-node cluster's programs, images and state live, and its
addresses: the same values as scripts/kubernetes/common.sh, which exports
them to the test (`make k8s-test`); the defaults are that file's."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

CACHE = Path(os.environ.get("SHOPMESH_K8S_CACHE", "/var/cache/shopmesh-k8s"))

POD_BRIDGE = os.environ.get("POD_BRIDGE", "shopmesh0")
POD_SUBNET = os.environ.get("POD_SUBNET", "10.244.0.0/24")
POD_GATEWAY = os.environ.get("POD_GATEWAY", "10.244.0.1")
SERVICE_SUBNET = os.environ.get("SERVICE_SUBNET", "10.96.0.0/24")
NODE_NAME = os.environ.get("NODE_NAME", "shopmesh-node")
CNI_BIN_DIR = Path(os.environ.get("CNI_BIN_DIR", "/usr/lib/cni"))
PAUSE_IMAGE = os.environ.get("PAUSE_IMAGE", "shopmesh-local/pause:v1.35.4")
# The kubelet's cgroup parent in every v1 hierarchy (and the v2 one, if any):
# all pods live under it, so removing it removes every cgroup the run made.
CGROUP_ROOT = "/shopmesh-k8s"


@dataclass(frozen=True)
class Layout:
    """One run's files, all under `state` (removed after the run) except the
    binaries, the image archive and containerd's image store (kept)."""

    bin: Path
    images: Path
    state: Path
    containerd_root: Path

    @classmethod
    def from_env(cls) -> Layout:
        bin_dir = os.environ.get("K8S_BIN")
        if not bin_dir:
            raise LookupError("K8S_BIN is not set: run the cluster test with `make k8s-test`")
        return cls(
            bin=Path(bin_dir),
            images=Path(os.environ.get("K8S_IMAGES", CACHE / "images")),
            state=Path(os.environ.get("K8S_STATE", CACHE / "state")),
            containerd_root=Path(os.environ.get("K8S_CONTAINERD_ROOT", CACHE / "containerd")),
        )

    def program(self, name: str) -> str:
        return str(self.bin / name)

    @property
    def logs(self) -> Path:
        return self.state / "logs"

    @property
    def pki(self) -> Path:
        return self.state / "pki"

    @property
    def kubeconfig(self) -> Path:
        return self.state / "kubeconfig"

    @property
    def containerd_socket(self) -> Path:
        return self.state / "containerd" / "containerd.sock"

    @property
    def containerd_state(self) -> Path:
        return self.state / "containerd" / "state"

    @property
    def kubelet_root(self) -> Path:
        return self.state / "kubelet"

    @property
    def cni_conf_dir(self) -> Path:
        return self.state / "cni" / "net.d"

    @property
    def cni_ipam_dir(self) -> Path:
        return self.state / "cni" / "ipam"

    @property
    def volumes(self) -> Path:
        """The hostPath PersistentVolumes the StatefulSets' claims bind to."""
        return self.state / "volumes"
