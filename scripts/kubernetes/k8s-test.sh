#!/usr/bin/env bash
# `make k8s-test`: the shop on a real single-node Kubernetes cluster on this
# machine (tests/kubernetes/cluster, pytest marker `k8s`). Needs root and
# `make tools`.
#
#   1. apt-get install Debian's CNI plugins if missing (containerd and runc
#      come with docker.io, which scripts/docker/engine.sh installs)
#   2. build.sh     etcd, Kubernetes, CoreDNS and pause from their modules
#                   (once per set of pins; cached outside the clone)
#   3. images.sh    the shop's images and pause as one archive (Docker engine)
#   4. pytest -m k8s tests/kubernetes/cluster
#                   starts the cluster, loads the archive into its containerd,
#                   applies overlays/local, tests, stops everything by PID and
#                   undoes what it changed on the machine
#
# Whatever happens, `python -m tests.kubernetes.cluster down` runs last: it
# removes what a killed test left. Extra pytest arguments: K8S_PYTEST_ARGS.
set -euo pipefail
# shellcheck source=scripts/kubernetes/common.sh
source "$(dirname "$0")/common.sh"
cd "$SHOPMESH_ROOT"
need_root "make k8s-test"
started=$(date +%s)
elapsed() { echo "$(($(date +%s) - started))s"; }
export PATH="$PATH:/usr/sbin:/sbin"

installed() { [[ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null)" == "install ok installed" ]]; }
if ! installed containernetworking-plugins; then
  log "installing containernetworking-plugins"
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
    "containernetworking-plugins=$CNI_PLUGINS_VERSION"
fi
for program in bridge host-local firewall loopback; do
  [[ -x "$CNI_BIN_DIR/$program" ]] || die "no CNI plugin $CNI_BIN_DIR/$program"
done

"$SHOPMESH_ROOT/scripts/kubernetes/build.sh"
log "programs ready after $(elapsed)"
"$SHOPMESH_ROOT/scripts/kubernetes/images.sh"
log "images ready after $(elapsed)"
command -v containerd >/dev/null || die "no containerd (it comes with docker.io)"

export SHOPMESH_K8S_CACHE K8S_BIN K8S_IMAGES K8S_STATE K8S_CONTAINERD_ROOT PAUSE_IMAGE \
  POD_BRIDGE POD_SUBNET POD_GATEWAY SERVICE_SUBNET NODE_NAME CNI_BIN_DIR
python="$SHOPMESH_ROOT/.venv/bin/python"
cleanup() {
  local rc=$?
  "$python" -m tests.kubernetes.cluster down || rc=1
  log "done after $(elapsed) (exit $rc)"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# pytest exits 5 when it collected nothing: a failure here, as in `make test`.
# shellcheck disable=SC2086 # K8S_PYTEST_ARGS is a list of words
"$python" -m pytest -m k8s tests/kubernetes/cluster ${K8S_PYTEST_ARGS:-} || {
  rc=$?
  if ((rc == 5)); then log "pytest collected no tests"; fi
  exit "$rc"
}
