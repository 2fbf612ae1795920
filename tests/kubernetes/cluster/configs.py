"""The configuration files of the node's programs, as text.

Every setting that differs from a program's default is here for a reason
written beside it; most keep the run inside its own folder and off the
machine's defaults (sockets, state, cgroups, log folders, sysctls)."""

from __future__ import annotations

import json
from dataclasses import dataclass

import yaml

from tests.kubernetes.cluster.layout import (
    CGROUP_ROOT,
    CNI_BIN_DIR,
    NODE_NAME,
    PAUSE_IMAGE,
    POD_BRIDGE,
    POD_GATEWAY,
    POD_SUBNET,
    Layout,
)


@dataclass(frozen=True)
class Ports:
    """Every port the cluster listens on, all on 127.0.0.1, picked free per run."""

    etcd_client: int
    etcd_peer: int
    apiserver: int
    kubelet: int
    kubelet_healthz: int
    proxy_healthz: int
    proxy_metrics: int
    coredns_ready: int


def containerd(layout: Layout) -> str:
    opt = layout.state / "containerd" / "opt"
    return f"""\
version = 2
root = "{layout.containerd_root}"
state = "{layout.containerd_state}"

[grpc]
  address = "{layout.containerd_socket}"

[ttrpc]
  address = "{layout.containerd_socket}.ttrpc"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE_IMAGE}"
  # This VM withholds CAP_SYS_RESOURCE: without this every pod fails with
  # "can't get final child's PID from pipe".
  restrict_oom_score_adj = true
  # Pod network namespaces under our state, not /var/run/netns.
  netns_mounts_under_state_dir = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{CNI_BIN_DIR}"
    conf_dir = "{layout.cni_conf_dir}"

[plugins."io.containerd.internal.v1.opt"]
  path = "{opt}"
"""


def cni(layout: Layout) -> str:
    """One bridge for every pod, its gateway the bridge's address on the host.
    The firewall plugin accepts the pods' forwarded traffic whatever the
    FORWARD chain's policy (a Docker engine sets it to DROP)."""
    return json.dumps(
        {
            "cniVersion": "1.0.0",
            "name": "shopmesh",
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": POD_BRIDGE,
                    "isGateway": True,
                    "ipMasq": True,
                    "hairpinMode": True,
                    "ipam": {
                        "type": "host-local",
                        "dataDir": str(layout.cni_ipam_dir),
                        "ranges": [[{"subnet": POD_SUBNET, "gateway": POD_GATEWAY}]],
                        "routes": [{"dst": "0.0.0.0/0"}],
                    },
                },
                {"type": "firewall", "backend": "iptables"},
            ],
        },
        indent=2,
    )


def kubeconfig(layout: Layout, ports: Ports, token: str) -> str:
    return yaml.safe_dump(
        {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "shopmesh",
                    "cluster": {
                        "server": f"https://127.0.0.1:{ports.apiserver}",
                        "certificate-authority": str(layout.pki / "ca.pem"),
                    },
                }
            ],
            "users": [{"name": "admin", "user": {"token": token}}],
            "contexts": [
                {
                    "name": "shopmesh",
                    "context": {"cluster": "shopmesh", "user": "admin", "namespace": "shopmesh"},
                }
            ],
            "current-context": "shopmesh",
        }
    )


def kubelet(layout: Layout, ports: Ports) -> str:
    return yaml.safe_dump(
        {
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            # The node's address: the API server reaches the kubelet there
            # (port-forward, logs). A node's IP cannot be a loopback address;
            # the bridge's is as private, it exists only on this machine.
            "address": POD_GATEWAY,
            "port": ports.kubelet,
            "healthzBindAddress": "127.0.0.1",
            "healthzPort": ports.kubelet_healthz,
            "readOnlyPort": 0,
            "containerRuntimeEndpoint": f"unix://{layout.containerd_socket}",
            # cgroup v1 host, no systemd.
            "failCgroupV1": False,
            "cgroupDriver": "cgroupfs",
            "cgroupRoot": CGROUP_ROOT,
            "failSwapOn": False,
            # Anyone who can reach the kubelet's port may use it: only this
            # machine and its pods can.
            "authentication": {"anonymous": {"enabled": True}, "webhook": {"enabled": False}},
            "authorization": {"mode": "AlwaysAllow"},
            "clusterDNS": [POD_GATEWAY],
            "clusterDomain": "cluster.local",
            "podLogsDir": str(layout.state / "pod-logs"),
            "staticPodPath": "",
            # A shared machine's disk is often fuller than the defaults allow;
            # eviction would only make the test flaky, not the shop safer.
            "evictionHard": {
                "memory.available": "100Mi",
                "nodefs.available": "1%",
                "imagefs.available": "1%",
                "nodefs.inodesFree": "1%",
            },
            "imageGCHighThresholdPercent": 100,
            "imageGCLowThresholdPercent": 99,
            "serializeImagePulls": False,
            "hairpinMode": "hairpin-veth",
            # The kubelet needs no sysctl changed for this test.
            "protectKernelDefaults": False,
            "resolvConf": "/etc/resolv.conf",
        }
    )


def kube_proxy(layout: Layout, ports: Ports) -> str:
    return yaml.safe_dump(
        {
            "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
            "kind": "KubeProxyConfiguration",
            "mode": "iptables",
            "clientConnection": {"kubeconfig": str(layout.kubeconfig)},
            "hostnameOverride": NODE_NAME,
            "clusterCIDR": POD_SUBNET,
            "bindAddress": "127.0.0.1",
            "healthzBindAddress": f"127.0.0.1:{ports.proxy_healthz}",
            "metricsBindAddress": f"127.0.0.1:{ports.proxy_metrics}",
            # Zero leaves the machine's conntrack sysctls as they are.
            "conntrack": {
                "maxPerCore": 0,
                "min": 0,
                "tcpEstablishedTimeout": "0s",
                "tcpCloseWaitTimeout": "0s",
            },
            # No NodePort Service here; none on every address of the machine,
            # and none on 127.0.0.1 (that sets net.ipv4.conf.all.route_localnet).
            "nodePortAddresses": ["primary"],
            "iptables": {"localhostNodePorts": False},
        }
    )


def corefile(layout: Layout, ports: Ports) -> str:
    """CoreDNS on the host, on the pods' gateway address: the cluster's DNS
    (Services, headless Services' pod addresses) for the pods, nothing else."""
    return f"""\
cluster.local:53 in-addr.arpa:53 ip6.arpa:53 {{
    bind {POD_GATEWAY}
    errors
    ready 127.0.0.1:{ports.coredns_ready}
    kubernetes cluster.local in-addr.arpa ip6.arpa {{
        kubeconfig {layout.kubeconfig} shopmesh
        pods insecure
        ttl 5
    }}
}}
"""
