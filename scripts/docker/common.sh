# Shared settings of scripts/docker/*.sh (sourced, not run).
#
# The Docker engine these scripts run is this project's own: its socket, PID
# file and run state live under SHOPMESH_DOCKER_RUN, its image store and build
# cache under SHOPMESH_DOCKER_CACHE. Both are outside the clone, so a fresh
# clone (CI) reuses the images and build cache of an earlier one, and
# `git clean` never touches them. The Compose plugin is built into the clone's
# git-ignored .tools/docker, which callers name as DOCKER_CONFIG.
# shellcheck shell=bash disable=SC2034 # the variables are for the scripts that source this

SHOPMESH_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
SHOPMESH_DOCKER_CACHE="${SHOPMESH_DOCKER_CACHE:-/var/cache/shopmesh-docker}"
SHOPMESH_DOCKER_RUN="${SHOPMESH_DOCKER_RUN:-/run/shopmesh-docker}"

DOCKERD_DATA_ROOT="$SHOPMESH_DOCKER_CACHE/data"
DOCKERD_LOG="$SHOPMESH_DOCKER_CACHE/dockerd.log"
DOCKERD_EXEC_ROOT="$SHOPMESH_DOCKER_RUN/exec"
DOCKERD_SOCKET="$SHOPMESH_DOCKER_RUN/docker.sock"
DOCKERD_PIDFILE="$SHOPMESH_DOCKER_RUN/dockerd.pid"

SHOPMESH_DOCKER_HOST="unix://$DOCKERD_SOCKET"
SHOPMESH_DOCKER_CONFIG="$SHOPMESH_ROOT/.tools/docker"

# Pins. Debian bookworm's docker.io is 20.10.24 (seen: 20.10.24+dfsg1-1+deb12u1+b6);
# the glob keeps Debian's security rebuilds of that release.
DOCKER_IO_VERSION="20.10.24+dfsg1-*"
DOCKERD_EXPECTED="20.10.24"
COMPOSE_VERSION="v2.40.3"
COMPOSE_PLUGIN="$SHOPMESH_DOCKER_CONFIG/cli-plugins/docker-compose"

log() { printf '%s: %s\n' "$(basename "$0")" "$*" >&2; }
die() { log "$*"; exit 1; }

# Every docker command of these scripts goes to our engine, whatever the
# caller's environment says.
docker_() { DOCKER_HOST="$SHOPMESH_DOCKER_HOST" DOCKER_CONFIG="$SHOPMESH_DOCKER_CONFIG" docker "$@"; }

# The PID of our dockerd if it is running, else nothing (and status 1).
dockerd_pid() {
  local pid
  [[ -r "$DOCKERD_PIDFILE" ]] || return 1
  pid="$(<"$DOCKERD_PIDFILE")"
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  [[ "$(cat "/proc/$pid/comm" 2>/dev/null)" == dockerd ]] || return 1
  printf '%s\n' "$pid"
}
