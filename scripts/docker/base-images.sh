#!/usr/bin/env bash
# Local stand-ins for the base images that services/*/Dockerfile and
# compose.yaml name, for an engine that can pull from no registry. Each is
# built under exactly the official name, so the same Dockerfiles and
# compose.yaml build unchanged here and where Docker Hub is reachable:
#
#   python:3.11-slim-bookworm      Debian bookworm's python3.11 + venv + pip,
#                                  `python`/`python3`/`pip` in /usr/local/bin,
#                                  no EXTERNALLY-MANAGED marker
#   golang:1.26-bookworm           this machine's Go in /usr/local/go, GOPATH
#                                  /go, GOTOOLCHAIN=local (no git, no C
#                                  compiler: the Dockerfiles need neither)
#   node:20-bookworm-slim          this machine's node, npm and Node headers in
#                                  /usr/local, user node (1000)
#   gcr.io/distroless/static-debian12:nonroot
#                                  passwd/group with nonroot (65532), CA
#                                  certificates, tzdata; no shell
#   jaegertracing/jaeger:<tag>     .tools/bin/jaeger (make tools) as
#                                  /cmd/jaeger/jaeger-linux, the official
#                                  entrypoint, user 10001; busybox for
#                                  healthchecks (the official image is Alpine)
#   nats:<tag>                     .venv/bin/nats-server (make tools) with the
#                                  official entrypoint and default config;
#                                  busybox (sh, wget) as on Alpine
#
# The python, golang and node images share one layer: a `debootstrap
# --variant=minbase bookworm` (cached as a tarball in SHOPMESH_DOCKER_CACHE),
# imported as shopmesh-local/debian:bookworm. Every image carries a label with
# a hash of what it was made from (this machine's extra CA certificates, the
# toolchain or binary, this script's recipe version): an image is built only
# when it is missing or that hash changed. An image of one of these names
# without the label (the real one, pulled) is left alone unless --force.
#
# This machine reaches the package registries through a TLS-intercepting
# proxy whose CA is in /usr/local/share/ca-certificates; the images trust
# whatever is there (and set PIP_CERT / NODE_EXTRA_CA_CERTS, as the host
# does), so builds inside containers reach the registries as the host does.
#
# Usage: scripts/docker/base-images.sh [--force]   (needs `engine.sh start`,
# root for debootstrap, and `make tools` for the jaeger and nats binaries)
set -euo pipefail
# shellcheck source=scripts/docker/common.sh
source "$(dirname "$0")/common.sh"

RECIPE=2 # bump to rebuild every image after changing a recipe below
LABEL=org.shopmesh.local-base
DEBIAN_BASE=shopmesh-local/debian:bookworm
ROOTFS_TAR="$SHOPMESH_DOCKER_CACHE/rootfs/bookworm-minbase.tar"
BUSYBOX="$SHOPMESH_DOCKER_CACHE/busybox/busybox"
PATH_ENV=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
FORCE=0
[[ "${1:-}" == --force ]] && FORCE=1

# The tags compose.yaml uses for Jaeger and NATS (read, so a new pin there
# needs no edit here).
compose_image() {
  sed -n "s|^[[:space:]]*image:[[:space:]]*\($1:[^[:space:]#]*\).*|\1|p" "$SHOPMESH_ROOT/compose.yaml" | sed -n 1p
}
JAEGER_IMAGE="$(compose_image jaegertracing/jaeger)"
NATS_IMAGE="$(compose_image nats)"
[[ -n "$JAEGER_IMAGE" && -n "$NATS_IMAGE" ]] || die "compose.yaml names no jaeger or nats image"

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

docker_ version >/dev/null 2>&1 || die "no engine at $SHOPMESH_DOCKER_HOST: run 'scripts/docker/engine.sh start'"

# Extra CA certificates this machine trusts (none on most machines).
extra_cas=()
if compgen -G '/usr/local/share/ca-certificates/*.crt' >/dev/null; then
  extra_cas=(/usr/local/share/ca-certificates/*.crt)
fi
ca_hash() { if ((${#extra_cas[@]})); then cat "${extra_cas[@]}" | sha256sum | cut -c1-16; else echo none; fi; }
CA_HASH="$(ca_hash)"

inputs_hash() { printf '%s\n' "recipe=$RECIPE" "ca=$CA_HASH" "$@" | sha256sum | cut -c1-16; }

# 0: build it; 1: up to date, or not ours (left alone). Sets REPLACED to
# the ID of the image the build replaces, for drop_replaced.
REPLACED=""
needs_build() {
  local name=$1 want=$2 have
  REPLACED=""
  if ! have="$(docker_ image inspect -f "{{index .Config.Labels \"$LABEL\"}}" "$name" 2>/dev/null)"; then
    return 0
  fi
  if [[ "$have" == "$want" ]]; then
    log "$name: up to date"
    return 1
  fi
  if [[ -z "$have" || "$have" == "<no value>" ]] && ((!FORCE)); then
    log "$name: present and not built here (the real image?): left alone"
    return 1
  fi
  REPLACED="$(docker_ image inspect -f '{{.Id}}' "$name")"
  return 0
}

# After a rebuild: the image it replaced, unless something still uses it
# (an image built on it, a container).
drop_replaced() {
  if [[ -n "$REPLACED" ]]; then
    docker_ rmi "$REPLACED" >/dev/null 2>&1 || true
    REPLACED=""
  fi
}

timed() {
  local start=$SECONDS
  "$@"
  drop_replaced
  log "$1 done in $((SECONDS - start))s"
}

# The first Debian mirror the machine's apt sources name for bookworm, so
# debootstrap goes where apt goes; nothing (debootstrap's default) if none.
debian_mirror() {
  local f
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [[ -r "$f" ]] || continue
    awk '$1 == "deb" { i = 2; if ($2 ~ /^\[/) { while ($i !~ /\]$/) i++; i++ }
           if ($(i + 1) == "bookworm") { print $i; exit } }' "$f"
  done
  for f in /etc/apt/sources.list.d/*.sources; do
    [[ -r "$f" ]] || continue
    awk 'function flush() { if (types ~ /(^| )deb( |$)/ && suites ~ /(^| )bookworm( |$)/ && uris != "") { split(uris, u, " "); print u[1]; found = 1 } types = suites = uris = "" }
         /^[[:space:]]*$/ { flush(); if (found) exit; next }
         /^Types:/ { sub(/^Types:[[:space:]]*/, ""); types = $0 }
         /^Suites:/ { sub(/^Suites:[[:space:]]*/, ""); suites = $0 }
         /^URIs:/ { sub(/^URIs:[[:space:]]*/, ""); uris = $0 }
         END { if (!found) flush() }' "$f"
  done | sed -n 1p
}

rootfs_tarball() {
  [[ -s "$ROOTFS_TAR" ]] && return
  [[ "$(id -u)" -eq 0 ]] || die "debootstrap needs root"
  command -v debootstrap >/dev/null || die "no debootstrap: run 'scripts/docker/engine.sh install'"
  local dir="$WORK/rootfs" mirror
  mirror="$(debian_mirror)"
  log "debootstrap --variant=minbase bookworm ${mirror:-(default mirror)}"
  # shellcheck disable=SC2086 # $mirror is one word or nothing
  debootstrap --variant=minbase bookworm "$dir" $mirror >"$WORK/debootstrap.log" 2>&1 ||
    { tail -n 30 "$WORK/debootstrap.log" >&2; die "debootstrap failed"; }
  # Slim, like Debian's own images: no docs, man pages or translations, and
  # apt keeps no package files or caches (now and in every later install).
  cat >"$dir/etc/dpkg/dpkg.cfg.d/docker" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/lintian/overrides/*
path-exclude /usr/share/locale/*
path-exclude /usr/share/man/*
EOF
  cat >"$dir/etc/apt/apt.conf.d/docker-clean" <<'EOF'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
EOF
  find "$dir/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete
  rm -rf "$dir"/usr/share/{groff,info,linda,locale,man}/* "$dir"/usr/share/lintian/overrides/*
  rm -rf "$dir"/var/cache/apt/archives/*.deb "$dir"/var/cache/apt/*.bin "$dir"/var/lib/apt/lists/* "$dir"/var/log/*.log
  mkdir -p "$(dirname "$ROOTFS_TAR")"
  tar --numeric-owner -C "$dir" -cf "$ROOTFS_TAR.new" .
  mv "$ROOTFS_TAR.new" "$ROOTFS_TAR"
  rm -rf "$dir"
}

# --- shopmesh-local/debian:bookworm: the shared Debian layer --------------
build_debian() {
  local want
  want="$(inputs_hash debian-minbase)"
  needs_build "$DEBIAN_BASE" "$want" || return 0
  timed rootfs_tarball
  local ctx="$WORK/debian"
  mkdir -p "$ctx/ca"
  if ((${#extra_cas[@]})); then cp "${extra_cas[@]}" "$ctx/ca/"; fi
  # CA certificates (the official images that the Dockerfiles build on have
  # them), including this machine's extra CAs.
  cat >"$ctx/Dockerfile" <<EOF
FROM shopmesh-local/debian:rootfs
COPY ca/ /usr/local/share/ca-certificates/
RUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ca-certificates \\
    && update-ca-certificates && rm -rf /var/lib/apt/lists/*
ENV PATH=$PATH_ENV LANG=C.UTF-8
LABEL $LABEL=$want
CMD ["bash"]
EOF
  docker_ import - shopmesh-local/debian:rootfs <"$ROOTFS_TAR" >/dev/null
  DOCKER_BUILDKIT=0 docker_ build -q -t "$DEBIAN_BASE" "$ctx" >/dev/null
  docker_ rmi shopmesh-local/debian:rootfs >/dev/null
}

# --- python:3.11-slim-bookworm ----------------------------------------------
build_python() {
  local name=python:3.11-slim-bookworm want ctx="$WORK/python" pip_cert=""
  want="$(inputs_hash python)"
  needs_build "$name" "$want" || return 0
  mkdir -p "$ctx"
  if ((${#extra_cas[@]})); then pip_cert="PIP_CERT=/etc/ssl/certs/ca-certificates.crt"; fi
  cat >"$ctx/Dockerfile" <<EOF
FROM $DEBIAN_BASE
RUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \\
      python3.11 python3.11-venv python3-pip \\
    && rm -rf /var/lib/apt/lists/* /usr/lib/python3.11/EXTERNALLY-MANAGED \\
    && ln -s /usr/bin/python3.11 /usr/local/bin/python3 \\
    && ln -s python3 /usr/local/bin/python \\
    && ln -s /usr/bin/pip3 /usr/local/bin/pip3 \\
    && ln -s pip3 /usr/local/bin/pip
ENV LANG=C.UTF-8 $pip_cert
LABEL $LABEL=$want
CMD ["python3"]
EOF
  DOCKER_BUILDKIT=0 docker_ build -q -t "$name" "$ctx" >/dev/null
}

# --- golang:1.26-bookworm -----------------------------------------------------
build_golang() {
  local name=golang:1.26-bookworm want ctx="$WORK/golang" goroot version
  goroot="$(go env GOROOT)"
  version="$(go env GOVERSION)"
  [[ "$version" == go1.26.* ]] || die "$name needs Go 1.26 on this machine, found $version"
  want="$(inputs_hash "golang=$version")"
  needs_build "$name" "$want" || return 0
  mkdir -p "$ctx"
  cp -a "$goroot" "$ctx/go"
  cat >"$ctx/Dockerfile" <<EOF
FROM $DEBIAN_BASE
COPY go/ /usr/local/go/
ENV GOLANG_VERSION=${version#go} GOTOOLCHAIN=local GOPATH=/go PATH=/go/bin:/usr/local/go/bin:$PATH_ENV
RUN mkdir -p /go/src /go/bin && chmod -R 1777 /go
WORKDIR /go
LABEL $LABEL=$want
EOF
  DOCKER_BUILDKIT=0 docker_ build -q -t "$name" "$ctx" >/dev/null
}

# --- node:20-bookworm-slim ----------------------------------------------------
build_node() {
  local name=node:20-bookworm-slim want ctx="$WORK/node" node npm_dir version extra=""
  node="$(command -v node)" || die "$name needs node on this machine"
  version="$("$node" --version)"
  [[ "$version" == v20.* ]] || die "$name needs Node 20 on this machine, found $version"
  npm_dir="$(cd "$(dirname "$(readlink -f "$(command -v npm)")")/.." && pwd)"
  local prefix
  prefix="$(cd "$(dirname "$node")/.." && pwd)"
  [[ -f "$prefix/include/node/node.h" ]] || die "no Node headers in $prefix/include/node"
  want="$(inputs_hash "node=$version" "npm=$(npm --version)")"
  needs_build "$name" "$want" || return 0
  mkdir -p "$ctx/bin" "$ctx/lib/node_modules" "$ctx/include"
  cp -a "$node" "$ctx/bin/node"
  cp -a "$npm_dir" "$ctx/lib/node_modules/npm"
  cp -a "$prefix/include/node" "$ctx/include/node"
  if ((${#extra_cas[@]})); then extra="NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt"; fi
  # The official image's entrypoint: a first argument that is an option or
  # no command runs under node.
  cat >"$ctx/bin/docker-entrypoint.sh" <<'EOF'
#!/bin/sh
set -e
if [ "${1#-}" != "${1}" ] || [ -z "$(command -v "${1}")" ] || { [ -f "${1}" ] && ! [ -x "${1}" ]; }; then
  set -- node "$@"
fi
exec "$@"
EOF
  chmod 755 "$ctx/bin/docker-entrypoint.sh"
  cat >"$ctx/Dockerfile" <<EOF
FROM $DEBIAN_BASE
RUN groupadd --gid 1000 node && useradd --uid 1000 --gid node --shell /bin/bash --create-home node
COPY bin/ /usr/local/bin/
COPY lib/ /usr/local/lib/
COPY include/ /usr/local/include/
RUN ln -s ../lib/node_modules/npm/bin/npm-cli.js /usr/local/bin/npm \\
    && ln -s ../lib/node_modules/npm/bin/npx-cli.js /usr/local/bin/npx \\
    && node --version && npm --version
ENV NODE_VERSION=${version#v} $extra
LABEL $LABEL=$want
ENTRYPOINT ["docker-entrypoint.sh"]
CMD ["node"]
EOF
  DOCKER_BUILDKIT=0 docker_ build -q -t "$name" "$ctx" >/dev/null
}

# --- tiny images, imported from a folder ------------------------------------

# Debian's static busybox, unpacked (never installed) into the cache.
busybox() {
  [[ -x "$BUSYBOX" ]] && return
  local dl="$WORK/busybox-deb"
  mkdir -p "$dl" "$(dirname "$BUSYBOX")"
  # apt's package lists may have been cleaned away since the last update.
  apt-cache show busybox-static >/dev/null 2>&1 || apt-get update -q >/dev/null
  (cd "$dl" && apt-get download -q -o APT::Sandbox::User=root busybox-static >/dev/null)
  dpkg -x "$dl"/busybox-static_*.deb "$dl/x"
  cp "$dl/x/bin/busybox" "$BUSYBOX.new"
  mv "$BUSYBOX.new" "$BUSYBOX"
}

# Alpine-like: busybox as /bin/sh, wget and the rest of its applets.
add_busybox() {
  local root=$1 applet
  busybox
  mkdir -p "$root/bin"
  cp "$BUSYBOX" "$root/bin/busybox"
  for applet in $("$BUSYBOX" --list); do
    [[ "$applet" == busybox ]] || ln -sf busybox "$root/bin/$applet"
  done
}

# /etc basics every image below has.
add_etc() {
  local root=$1
  mkdir -p "$root/etc/ssl/certs" "$root/tmp" "$root/usr/share"
  chmod 1777 "$root/tmp"
  cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/"
  cp -a /usr/share/zoneinfo "$root/usr/share/zoneinfo"
  local f
  for f in /etc/services /etc/protocols /etc/mime.types; do
    if [[ -r "$f" ]]; then cp "$f" "$root/etc/"; fi
  done
  printf 'passwd: files\ngroup: files\nhosts: files dns\n' >"$root/etc/nsswitch.conf"
}

import_dir() {
  local root=$1 name=$2
  shift 2
  tar --numeric-owner -C "$root" -c . | docker_ import "$@" - "$name" >/dev/null
}

# --- gcr.io/distroless/static-debian12:nonroot -------------------------------
build_distroless() {
  local name=gcr.io/distroless/static-debian12:nonroot want root="$WORK/distroless"
  want="$(inputs_hash distroless)"
  needs_build "$name" "$want" || return 0
  add_etc "$root"
  cat >"$root/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/sbin/nologin
nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin
nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin
EOF
  printf 'root:x:0:\nnobody:x:65534:\ntty:x:5:\nstaff:x:50:\nnonroot:x:65532:\n' >"$root/etc/group"
  printf 'PRETTY_NAME="Distroless (local stand-in, shopmesh)"\nID=debian\nVERSION_ID="12"\n' >"$root/etc/os-release"
  mkdir -p "$root/root" "$root/home/nonroot"
  chmod 700 "$root/root" "$root/home/nonroot"
  chown 65532:65532 "$root/home/nonroot"
  import_dir "$root" "$name" \
    --change "ENV PATH=$PATH_ENV" \
    --change "ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt" \
    --change "USER 65532" \
    --change "WORKDIR /home/nonroot" \
    --change "LABEL $LABEL=$want"
}

# --- jaegertracing/jaeger -----------------------------------------------------
# Official image: Alpine with CA certificates, the binary at
# /cmd/jaeger/jaeger-linux as ENTRYPOINT, user 10001, JAEGER_LISTEN_HOST.
build_jaeger() {
  local name=$JAEGER_IMAGE want root="$WORK/jaeger" bin="$SHOPMESH_ROOT/.tools/bin/jaeger" module
  [[ -x "$bin" ]] || die "$bin missing: run 'make tools'"
  module="$(sed -n 's/^[[:space:]]*github.com\/jaegertracing\/jaeger \(v[^ ]*\).*/\1/p' "$SHOPMESH_ROOT/tools/jaeger/go.mod" | sed -n 1p)"
  want="$(inputs_hash "jaeger=$module" "$(sha256sum <"$bin")")"
  needs_build "$name" "$want" || return 0
  add_etc "$root"
  add_busybox "$root"
  mkdir -p "$root/cmd/jaeger"
  # Stripped copy: the build keeps DWARF, 30% of the file.
  strip -o "$root/cmd/jaeger/jaeger-linux" "$bin" 2>/dev/null || cp "$bin" "$root/cmd/jaeger/jaeger-linux"
  # make tools builds it with cgo (dynamic): its libraries come along.
  local lib
  for lib in $(ldd "$bin" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }'); do
    mkdir -p "$root$(dirname "$lib")"
    cp -L "$lib" "$root$lib"
  done
  local strategies
  strategies="$(cd "$SHOPMESH_ROOT/tools/jaeger" && go list -m -f '{{.Dir}}' github.com/jaegertracing/jaeger 2>/dev/null)/cmd/jaeger/sampling-strategies.json" || true
  if [[ -f "$strategies" ]]; then cp "$strategies" "$root/cmd/jaeger/"; fi
  printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/sbin/nologin\n' >"$root/etc/passwd"
  printf 'root:x:0:\nnobody:x:65534:\n' >"$root/etc/group"
  import_dir "$root" "$name" \
    --change "ENV PATH=$PATH_ENV" \
    --change "ENV JAEGER_LISTEN_HOST=0.0.0.0" \
    --change "EXPOSE 4317 4318 5778 5779 9411 13132 13133 14250 14268 16686" \
    --change "VOLUME /tmp" \
    --change 'ENTRYPOINT ["/cmd/jaeger/jaeger-linux"]' \
    --change "USER 10001" \
    --change "LABEL $LABEL=$want"
}

# --- nats -----------------------------------------------------------------------
# Official nats:*-alpine: nats-server in /usr/local/bin, docker-entrypoint.sh
# (a first argument that is an option runs nats-server with it), a default
# config; runs as root.
build_nats() {
  local name=$NATS_IMAGE want root="$WORK/nats" bin="$SHOPMESH_ROOT/.venv/bin/nats-server" tag version
  [[ -x "$bin" ]] || die "$bin missing: run 'make tools'"
  tag="${name#*:}"
  version="$("$bin" --version)"
  [[ "$version" == "nats-server: v${tag%%-*}" ]] || die "$name wants nats-server ${tag%%-*}, $bin is: $version"
  want="$(inputs_hash "$version")"
  needs_build "$name" "$want" || return 0
  add_etc "$root"
  add_busybox "$root"
  mkdir -p "$root/usr/local/bin" "$root/etc/nats"
  cp "$bin" "$root/usr/local/bin/nats-server"
  cat >"$root/usr/local/bin/docker-entrypoint.sh" <<'EOF'
#!/bin/sh
set -e
if [ "$#" -eq 0 ] || [ "${1#-}" != "$1" ]; then
  set -- nats-server "$@"
fi
exec "$@"
EOF
  chmod 755 "$root/usr/local/bin/docker-entrypoint.sh"
  printf 'port: 4222\nmonitor_port: 8222\n' >"$root/etc/nats/nats-server.conf"
  printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/sbin/nologin\n' >"$root/etc/passwd"
  printf 'root:x:0:\nnobody:x:65534:\n' >"$root/etc/group"
  import_dir "$root" "$name" \
    --change "ENV PATH=$PATH_ENV" \
    --change "EXPOSE 4222 6222 8222" \
    --change 'ENTRYPOINT ["docker-entrypoint.sh"]' \
    --change 'CMD ["nats-server", "--config", "/etc/nats/nats-server.conf"]' \
    --change "LABEL $LABEL=$want"
}

timed build_debian
timed build_python
timed build_golang
timed build_node
timed build_distroless
timed build_jaeger
timed build_nats

# Every base the Dockerfiles name and every image compose.yaml runs without
# building must now be in the store.
missing=0
while read -r image; do
  if ! docker_ image inspect "$image" >/dev/null 2>&1; then
    log "missing: $image"
    missing=1
  fi
done < <(
  {
    awk 'toupper($1) == "FROM" { print $2 }' "$SHOPMESH_ROOT"/services/*/Dockerfile
    printf '%s\n' "$JAEGER_IMAGE" "$NATS_IMAGE"
  } | grep -v -x -F -f <(awk 'toupper($1) == "FROM" && toupper($3) == "AS" { print $4 }' "$SHOPMESH_ROOT"/services/*/Dockerfile) |
    sort -u
)
((!missing)) || die "some base images are missing"
docker_ images --filter "label=$LABEL" --format '{{.Repository}}:{{.Tag}}\t{{.Size}}'
