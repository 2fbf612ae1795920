#!/usr/bin/env bash
# The project's own Docker engine, for machines with no Docker daemon running
# (CI here): Debian's docker.io (dockerd 20.10) on a socket of its own, plus
# Compose v2 built from its Go module. Run as root.
#
#   scripts/docker/engine.sh install   apt-get install docker.io and debootstrap
#                                      if missing; build the Compose plugin into
#                                      .tools/docker/cli-plugins if missing
#   scripts/docker/engine.sh start     start dockerd (if not running) and wait
#                                      until it answers; prints the env to use
#   scripts/docker/engine.sh stop      stop the dockerd that `start` started
#   scripts/docker/engine.sh status    exit 0 if it runs, 1 if not
#   scripts/docker/engine.sh env       print the env a caller needs:
#                                        eval "$(scripts/docker/engine.sh env)"
#
# Paths (see common.sh): image store and build cache in SHOPMESH_DOCKER_CACHE
# (default /var/cache/shopmesh-docker), socket, PID file and run state in
# SHOPMESH_DOCKER_RUN (default /run/shopmesh-docker); the daemon's log is
# $SHOPMESH_DOCKER_CACHE/dockerd.log. SHOPMESH_DOCKER_START_TIMEOUT (seconds,
# default 60) bounds the wait in `start`.
set -euo pipefail
# shellcheck source=scripts/docker/common.sh
source "$(dirname "$0")/common.sh"

need_root() { [[ "$(id -u)" -eq 0 ]] || die "$1 needs root"; }

installed() { [[ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null)" == "install ok installed" ]]; }

install_packages() {
  local -a missing=()
  installed docker.io || missing+=("docker.io=$DOCKER_IO_VERSION")
  installed debootstrap || missing+=(debootstrap)
  if ((${#missing[@]})); then
    need_root "apt-get install"
    log "installing ${missing[*]}"
    # No init system here: keep the package's postinst from trying to start
    # a system dockerd (on /var/run/docker.sock) of its own.
    local policy=/usr/sbin/policy-rc.d made_policy=0
    if [[ ! -e "$policy" ]]; then
      printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 755 "$policy" && made_policy=1
    fi
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
    if ((made_policy)); then rm -f "$policy"; fi
  fi
  local seen
  seen="$(dockerd --version)"
  [[ "$seen" == *"version $DOCKERD_EXPECTED"* ]] || die "expected dockerd $DOCKERD_EXPECTED, found: $seen"
  log "$seen; docker.io $(dpkg-query -W -f='${Version}' docker.io); debootstrap $(dpkg-query -W -f='${Version}' debootstrap)"
}

# Compose v2 is a Go program whose go.mod has exclude directives, so
# `go install module@version` refuses it: download the module, build it as the
# main module. Go's module and build caches (outside the clone) make a rebuild
# after a fresh clone fast.
install_compose() {
  local want="${COMPOSE_VERSION#v}"
  if [[ -x "$COMPOSE_PLUGIN" ]] && [[ "$("$COMPOSE_PLUGIN" version --short 2>/dev/null)" == "$want" ]]; then
    log "docker compose $want already built: $COMPOSE_PLUGIN"
    return
  fi
  command -v go >/dev/null || die "building Compose needs Go on PATH"
  local work dir
  work="$(mktemp -d)"
  # shellcheck disable=SC2064 # expand now: $work is local
  trap "rm -rf '$work'" EXIT
  dir="$(cd "$work" && go mod download -json "github.com/docker/compose/v2@$COMPOSE_VERSION" |
    sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
  [[ -d "$dir" ]] || die "go mod download gave no folder for compose $COMPOSE_VERSION"
  cp -R "$dir" "$work/src"
  chmod -R u+w "$work/src"
  mkdir -p "$(dirname "$COMPOSE_PLUGIN")"
  log "building docker compose $want (minutes with cold Go caches, seconds with warm ones)"
  (cd "$work/src" && CGO_ENABLED=0 GOWORK=off GOFLAGS=-buildvcs=false go build -trimpath \
    -ldflags "-s -w -X github.com/docker/compose/v2/internal.Version=$COMPOSE_VERSION" \
    -o "$COMPOSE_PLUGIN.new" ./cmd)
  mv "$COMPOSE_PLUGIN.new" "$COMPOSE_PLUGIN"
  rm -rf "$work"
  trap - EXIT
  log "built $("$COMPOSE_PLUGIN" version)"
}

print_env() {
  printf 'export DOCKER_HOST=%q\n' "$SHOPMESH_DOCKER_HOST"
  printf 'export DOCKER_CONFIG=%q\n' "$SHOPMESH_DOCKER_CONFIG"
}

answers() { docker_ info --format '{{.ServerVersion}}' >/dev/null 2>&1; }

# dockerd turns on IPv4 forwarding when it is off, and then sets the FORWARD
# chain's policy to DROP. `start` records both as they were; `stop` puts back
# what dockerd changed (its own chains stay, and are reused on the next start).
HOST_NET_STATE="$SHOPMESH_DOCKER_RUN/host-net.before"
forward_policy() { iptables -S FORWARD 2>/dev/null | sed -n 's/^-P FORWARD //p'; }

record_host_net() {
  printf '%s %s\n' "$(cat /proc/sys/net/ipv4/ip_forward)" "$(forward_policy)" >"$HOST_NET_STATE"
}

restore_host_net() {
  [[ -r "$HOST_NET_STATE" ]] || return 0
  local ip_forward policy
  read -r ip_forward policy <"$HOST_NET_STATE"
  if [[ "$policy" == ACCEPT && "$(forward_policy)" == DROP ]]; then
    log "restoring the FORWARD policy (ACCEPT)"
    iptables -P FORWARD ACCEPT
  fi
  if [[ "$ip_forward" == 0 && "$(cat /proc/sys/net/ipv4/ip_forward)" == 1 ]]; then
    log "restoring net.ipv4.ip_forward=0"
    echo 0 >/proc/sys/net/ipv4/ip_forward
  fi
  rm -f "$HOST_NET_STATE"
}

start() {
  need_root "dockerd"
  command -v dockerd >/dev/null || die "no dockerd: run '$0 install'"
  local pid
  if pid="$(dockerd_pid)"; then
    log "dockerd already running (PID $pid)"
  else
    mkdir -p "$DOCKERD_DATA_ROOT" "$DOCKERD_EXEC_ROOT"
    chmod 700 "$SHOPMESH_DOCKER_RUN"
    rm -f "$DOCKERD_PIDFILE"
    [[ -e "$HOST_NET_STATE" ]] || record_host_net
    log "starting dockerd (log: $DOCKERD_LOG)"
    # Its own session, so it outlives this script; its PID file is the
    # only handle `stop` uses.
    setsid dockerd \
      --data-root "$DOCKERD_DATA_ROOT" \
      --exec-root "$DOCKERD_EXEC_ROOT" \
      --host "$SHOPMESH_DOCKER_HOST" \
      --pidfile "$DOCKERD_PIDFILE" \
      </dev/null >>"$DOCKERD_LOG" 2>&1 &
    local started=$! timeout="${SHOPMESH_DOCKER_START_TIMEOUT:-60}" waited=0
    until answers; do
      if ! kill -0 "$started" 2>/dev/null; then
        tail -n 20 "$DOCKERD_LOG" >&2
        die "dockerd exited during start-up"
      fi
      if ((waited >= timeout * 2)); then
        tail -n 20 "$DOCKERD_LOG" >&2
        kill -TERM "$started" 2>/dev/null || true
        die "dockerd did not answer within ${timeout}s; stopped it (PID $started)"
      fi
      sleep 0.5
      waited=$((waited + 1))
    done
    pid="$(dockerd_pid)" || die "dockerd answers but its PID file $DOCKERD_PIDFILE is not ours"
    log "dockerd $(docker_ info --format '{{.ServerVersion}}') ready (PID $pid) after $((waited / 2))s"
  fi
  log "use this engine with:"
  print_env
}

stop() {
  local pid containerd_pid=""
  if ! pid="$(dockerd_pid)"; then
    log "dockerd not running"
    return
  fi
  # The containerd that dockerd started for itself; dockerd stops it on a
  # clean shutdown, this script only if dockerd had to be killed.
  local cpidfile="$DOCKERD_EXEC_ROOT/containerd/containerd.pid"
  if [[ -r "$cpidfile" ]]; then containerd_pid="$(<"$cpidfile")"; fi
  log "stopping dockerd (PID $pid)"
  kill -TERM "$pid"
  local waited=0
  while kill -0 "$pid" 2>/dev/null; do
    if ((waited >= 120)); then
      log "dockerd still running after 60s: SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
      break
    fi
    sleep 0.5
    waited=$((waited + 1))
  done
  if [[ "$containerd_pid" =~ ^[0-9]+$ ]] &&
    [[ "$(cat "/proc/$containerd_pid/comm" 2>/dev/null)" == containerd ]]; then
    log "stopping its containerd (PID $containerd_pid)"
    kill -TERM "$containerd_pid" 2>/dev/null || true
  fi
  restore_host_net
  log "dockerd stopped"
}

case "${1:-}" in
  install)
    install_packages
    install_compose
    ;;
  start) start ;;
  stop) stop ;;
  status)
    if pid="$(dockerd_pid)" && answers; then
      log "dockerd running (PID $pid)"
    else
      log "dockerd not running"
      exit 1
    fi
    ;;
  env) print_env ;;
  *)
    sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2
    exit 2
    ;;
esac
