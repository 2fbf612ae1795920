#!/usr/bin/env bash
# `make compose-test`: the real Dockerfiles and compose.yaml, built and run
# (tests/compose, pytest marker `compose`). On a machine without Docker or a
# registry (CI here) it first installs what it needs and runs the project's
# own engine:
#
#   1. engine.sh install   docker.io and debootstrap (apt) if missing, the
#                          Compose v2 plugin (built from its Go module)
#   2. engine.sh start     dockerd on its own socket, unless it already runs
#   3. base-images.sh      local stand-ins for the base images (no registry)
#   4. pytest -m compose   builds the images, runs the stack, tears it down
#
# and stops the dockerd it started (by its PID file) whatever happens. A
# dockerd that was already running is left running. Needs root and `make
# tools`. Extra pytest arguments: COMPOSE_PYTEST_ARGS.
set -euo pipefail
# shellcheck source=scripts/docker/common.sh
source "$(dirname "$0")/common.sh"
cd "$SHOPMESH_ROOT"
engine="$SHOPMESH_ROOT/scripts/docker/engine.sh"
started=$(date +%s)
elapsed() { echo "$(($(date +%s) - started))s"; }

"$engine" install

we_started=0
if ! "$engine" status 2>/dev/null; then
  we_started=1
fi
stop_engine() {
  local rc=$?
  # Each rebuild leaves the previous image untagged; the store is the
  # project's own (SHOPMESH_DOCKER_CACHE), so drop those to keep it from growing.
  # The build cache stays, so warm rebuilds stay fast.
  docker_ image prune --force >/dev/null 2>&1 || true
  if ((we_started)); then "$engine" stop || rc=1; fi
  log "done after $(elapsed) (exit $rc)"
  exit "$rc"
}
trap stop_engine EXIT
trap 'exit 130' INT TERM
"$engine" start >/dev/null
eval "$("$engine" env)"
log "engine ready after $(elapsed)"

"$SHOPMESH_ROOT/scripts/docker/base-images.sh"
log "base images ready after $(elapsed)"

# pytest exits 5 when it collected nothing: a failure here, as in `make test`.
# shellcheck disable=SC2086 # COMPOSE_PYTEST_ARGS is a list of words
"$SHOPMESH_ROOT/.venv/bin/python" -m pytest -m compose tests/compose ${COMPOSE_PYTEST_ARGS:-} || {
  rc=$?
  if ((rc == 5)); then log "pytest collected no tests"; fi
  exit "$rc"
}
