#!/usr/bin/env bash
# Builds the single-node cluster's programs from their Go modules into
# $K8S_BIN (see common.sh), once per set of pins; a second run with the same
# pins finds them and returns at once.
#
#   etcd            go.etcd.io/etcd/server/v3, as the main module: its go.mod
#                   replaces its sibling modules with `../` paths, which
#                   `go install module@version` refuses; a copy of that go.mod
#                   without them (-modfile) takes the released siblings instead
#   kube-*, kubelet, kubectl
#                   k8s.io/kubernetes likewise: its go.mod points every k8s.io
#                   staging module at ./staging/src; the copy points them at
#                   their released v0.X.Y (the same code, published)
#   coredns         `go install`, no replace directives
#   pause           the pod sandbox's process, pause.c from the Kubernetes
#                   module, compiled static with gcc
#
# Go's module and build caches (outside the clone) make a rebuild after a
# change of pins fast. The build runs with GOFLAGS=-mod=mod: the copied
# go.mod files list versions the originals only replaced.
set -euo pipefail
# shellcheck source=scripts/kubernetes/common.sh
source "$(dirname "$0")/common.sh"

PROGRAMS=(etcd kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl coredns pause)

built() {
  local p
  for p in "${PROGRAMS[@]}"; do [[ -x "$K8S_BIN/$p" ]] || return 1; done
}

if built; then
  log "already built: $K8S_BIN"
  exit 0
fi

started=$(date +%s)
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
out="$work/bin"
mkdir -p "$out"

module_dir() { go mod download -json "$1@$2" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p'; }

kube_dir="$(module_dir k8s.io/kubernetes "$KUBERNETES_VERSION")"
etcd_dir="$(module_dir go.etcd.io/etcd/server/v3 "$ETCD_VERSION")"
[[ -d "$kube_dir" && -d "$etcd_dir" ]] || die "could not download k8s.io/kubernetes or etcd"

log "building etcd $ETCD_VERSION"
sed '/=> \.\.\//d' "$etcd_dir/go.mod" >"$work/etcd.go.mod"
cp "$etcd_dir/go.sum" "$work/etcd.go.sum"
(cd "$etcd_dir" && GOWORK=off CGO_ENABLED=0 go build -modfile="$work/etcd.go.mod" -mod=mod \
  -trimpath -ldflags "-s -w" -o "$out/etcd" .)

log "building Kubernetes $KUBERNETES_VERSION (a few minutes with an empty Go build cache)"
staging="v0.${KUBERNETES_VERSION#v1.}"
sed -E "s#=> \./staging/src/(k8s\.io/[A-Za-z0-9_.-]+)#=> \1 ${staging}#" "$kube_dir/go.mod" >"$work/kube.go.mod"
cp "$kube_dir/go.sum" "$work/kube.go.sum"
! grep -q '=> \./' "$work/kube.go.mod" || die "k8s.io/kubernetes go.mod still has a local replace"
minor="${KUBERNETES_VERSION#v1.}"
minor="${minor%%.*}"
version_pkg=k8s.io/component-base/version
(cd "$kube_dir" && GOWORK=off CGO_ENABLED=0 go build -modfile="$work/kube.go.mod" -mod=mod -trimpath \
  -ldflags "-s -w -X $version_pkg.gitVersion=$KUBERNETES_VERSION -X $version_pkg.gitMajor=1 -X $version_pkg.gitMinor=$minor" \
  -o "$out/" ./cmd/kube-apiserver ./cmd/kube-controller-manager ./cmd/kube-scheduler \
  ./cmd/kubelet ./cmd/kube-proxy ./cmd/kubectl)

log "building CoreDNS $COREDNS_VERSION"
GOBIN="$out" CGO_ENABLED=0 go install -trimpath -ldflags "-s -w" "github.com/coredns/coredns@$COREDNS_VERSION"

log "building pause"
gcc -Os -Wall -static -DVERSION="$KUBERNETES_VERSION" -o "$out/pause" "$kube_dir/build/pause/linux/pause.c"
strip "$out/pause"

# Into place only when every program built: a half-built folder never counts.
mkdir -p "$(dirname "$K8S_BIN")"
rm -rf "$K8S_BIN"
mv "$out" "$K8S_BIN"
log "built in $(($(date +%s) - started))s: $K8S_BIN"
