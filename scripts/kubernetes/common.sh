# Shared settings of scripts/kubernetes/*.sh (sourced, not run).
#
# `make k8s-test` runs a real single-node Kubernetes cluster on this machine,
# built from the Go modules (no registry, no kind): etcd, the control plane,
# the kubelet and kube-proxy, CoreDNS, over Debian's containerd, runc and CNI
# plugins. Everything it keeps lives under SHOPMESH_K8S_CACHE, outside the
# clone, so a fresh clone (CI) reuses it:
#
#   bin/<key>/         the binaries, one folder per set of pins (build.sh)
#   images/            the shop's images as `docker save` archives (images.sh)
#   containerd/        containerd's content store and snapshots: the imported
#                      images survive between runs
#   state/             one run's cluster (etcd, certificates, kubelet, CNI,
#                      sockets, logs); cluster.sh removes it after the run,
#                      or keeps it as state.failed/ when the run failed
# shellcheck shell=bash disable=SC2034 # the variables are for the scripts that source this

SHOPMESH_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
SHOPMESH_K8S_CACHE="${SHOPMESH_K8S_CACHE:-/var/cache/shopmesh-k8s}"

# Pins. Kubernetes 1.35 is the version tests/kubernetes validates against.
# etcd 3.6 is the line Kubernetes 1.35 is tested with; CoreDNS 1.14 needs
# go 1.25, which this machine's Go satisfies.
KUBERNETES_VERSION="v1.35.4"
ETCD_VERSION="v3.6.16"
COREDNS_VERSION="v1.14.7"
# Debian bookworm's CNI plugins (bridge, host-local, firewall, loopback).
CNI_PLUGINS_VERSION="1.1.1+ds1-*"
CNI_BIN_DIR=/usr/lib/cni

K8S_BIN="$SHOPMESH_K8S_CACHE/bin/k8s-${KUBERNETES_VERSION}_etcd-${ETCD_VERSION}_coredns-${COREDNS_VERSION}"
K8S_IMAGES="$SHOPMESH_K8S_CACHE/images"
K8S_STATE="$SHOPMESH_K8S_CACHE/state"
K8S_CONTAINERD_ROOT="$SHOPMESH_K8S_CACHE/containerd"
# The pause image every pod's sandbox runs: built from the pause.c of the
# Kubernetes module (no registry to pull registry.k8s.io/pause from).
PAUSE_IMAGE="shopmesh-local/pause:${KUBERNETES_VERSION}"

# The cluster's addresses: private ranges this machine does not use.
POD_BRIDGE=shopmesh0
POD_SUBNET=10.244.0.0/24
POD_GATEWAY=10.244.0.1 # also where CoreDNS answers (the pods' nameserver)
SERVICE_SUBNET=10.96.0.0/24
NODE_NAME=shopmesh-node

log() { printf '%s: %s\n' "$(basename "$0")" "$*" >&2; }
die() { log "$*"; exit 1; }
need_root() { [[ "$(id -u)" -eq 0 ]] || die "$1 needs root"; }
