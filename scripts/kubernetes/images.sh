#!/usr/bin/env bash
# The images the single-node cluster runs, as one `docker save` archive in
# $K8S_IMAGES (see common.sh), for `ctr images import` into its containerd:
# the shop's six images built from the real Dockerfiles (docker compose build,
# cached by the engine's build cache), the local Jaeger and NATS images of
# scripts/docker/base-images.sh, and the pod sandbox's pause image (built
# FROM scratch around build.sh's pause).
#
# Uses the project's own Docker engine (scripts/docker/engine.sh), started
# here when it is not running and stopped again afterwards. The archive is
# written again only when an image changed (their IDs are kept beside it).
set -euo pipefail
# shellcheck source=scripts/kubernetes/common.sh
source "$(dirname "$0")/common.sh"
# shellcheck source=scripts/docker/common.sh
source "$SHOPMESH_ROOT/scripts/docker/common.sh"
cd "$SHOPMESH_ROOT"
engine="$SHOPMESH_ROOT/scripts/docker/engine.sh"
started=$(date +%s)

"$engine" install
we_started=0
"$engine" status 2>/dev/null || we_started=1
work="$(mktemp -d)"
finish() {
  local rc=$?
  docker_ image prune --force >/dev/null 2>&1 || true
  if ((we_started)); then "$engine" stop || rc=1; fi
  rm -rf "$work"
  exit "$rc"
}
trap finish EXIT
trap 'exit 130' INT TERM
"$engine" start >/dev/null
"$SHOPMESH_ROOT/scripts/docker/base-images.sh"

# compose.yaml needs the keys of an .env to be read at all; these are thrown
# away (the cluster gets its own in the Secret shop-keys).
"$SHOPMESH_ROOT/.venv/bin/python" "$SHOPMESH_ROOT/scripts/docker/make-env.py" "$work/.env"
# One image at a time: builds on a small machine are CPU-bound.
docker_ compose --project-directory "$SHOPMESH_ROOT" --file "$SHOPMESH_ROOT/compose.yaml" \
  --env-file "$work/.env" --parallel 1 build
log "shop images built after $(($(date +%s) - started))s"

mkdir -p "$work/pause"
cp "$K8S_BIN/pause" "$work/pause/pause"
printf 'FROM scratch\nCOPY pause /pause\nUSER 65535:65535\nENTRYPOINT ["/pause"]\n' >"$work/pause/Dockerfile"
docker_ build --quiet --tag "$PAUSE_IMAGE" "$work/pause" >/dev/null

mapfile -t images < <(
  sed -n 's|^[[:space:]]*image:[[:space:]]*\([^[:space:]#]*\).*|\1|p' "$SHOPMESH_ROOT/compose.yaml" | sort -u
  echo "$PAUSE_IMAGE"
)
ids="$(for i in "${images[@]}"; do printf '%s %s\n' "$i" "$(docker_ image inspect --format '{{.Id}}' "$i")"; done)"
mkdir -p "$K8S_IMAGES"
if [[ -f "$K8S_IMAGES/shop.tar" && "$(cat "$K8S_IMAGES/shop.ids" 2>/dev/null)" == "$ids" ]]; then
  log "images unchanged: $K8S_IMAGES/shop.tar"
else
  docker_ save --output "$K8S_IMAGES/shop.tar.new" "${images[@]}"
  mv "$K8S_IMAGES/shop.tar.new" "$K8S_IMAGES/shop.tar"
  printf '%s\n' "$ids" >"$K8S_IMAGES/shop.ids"
  log "saved ${#images[@]} images: $K8S_IMAGES/shop.tar ($(du -h "$K8S_IMAGES/shop.tar" | cut -f1))"
fi
log "images ready after $(($(date +%s) - started))s"
