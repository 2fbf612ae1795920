#!/usr/bin/env bash
# Fails if the committed gen/ differs from what scripts/gen-protos.sh makes.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
"$root/scripts/gen-protos.sh" "$tmp"
status=0
for lang in python go ts; do
  diff -r -x go.mod -x go.sum "$tmp/$lang" "$root/gen/$lang" >&2 || status=1
done
if [[ $status -ne 0 ]]; then
  echo "gen/ is out of date with protos/: run 'make protos' and commit the result" >&2
fi
exit $status
