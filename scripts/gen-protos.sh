#!/usr/bin/env bash
# Generates the Python, Go and TypeScript stubs of every contract under protos/
# with one protoc (the one grpcio-tools ships, pinned by requirements.lock).
# Usage: scripts/gen-protos.sh [OUT_DIR]   (default: gen)
# Output is wiped and rewritten, so a second run changes nothing.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
out="${1:-$root/gen}"
venv="$root/.venv/bin"
tools="$root/.tools/bin"
node_bin="$root/node_modules/.bin"

for tool in "$venv/python" "$venv/protoc-gen-mypy" "$tools/protoc-gen-go" \
  "$tools/protoc-gen-go-grpc" "$node_bin/protoc-gen-ts_proto"; do
  [[ -x "$tool" ]] || { echo "missing $tool: run 'make tools'" >&2; exit 1; }
done

rm -rf "$out/python/shop" "$out/go/shop" "$out/ts"
mkdir -p "$out/python" "$out/go" "$out/ts"

cd "$root/protos"
mapfile -t files < <(find shop -name '*.proto' | LC_ALL=C sort)
wkt="$("$venv/python" -c 'import grpc_tools, os; print(os.path.join(os.path.dirname(grpc_tools.__file__), "_proto"))')"

"$venv/python" -m grpc_tools.protoc -I . -I "$wkt" \
  --python_out="$out/python" --grpc_python_out="$out/python" \
  --plugin=protoc-gen-mypy="$venv/protoc-gen-mypy" --mypy_out="$out/python" --mypy_opt=quiet \
  --plugin=protoc-gen-mypy_grpc="$venv/protoc-gen-mypy_grpc" --mypy_grpc_out="$out/python" --mypy_grpc_opt=quiet \
  --plugin=protoc-gen-go="$tools/protoc-gen-go" --go_out="$out/go" --go_opt=paths=source_relative \
  --plugin=protoc-gen-go-grpc="$tools/protoc-gen-go-grpc" --go-grpc_out="$out/go" \
  --go-grpc_opt=paths=source_relative \
  --plugin=protoc-gen-ts_proto="$node_bin/protoc-gen-ts_proto" --ts_proto_out="$out/ts" \
  --ts_proto_opt=outputServices=grpc-js,esModuleInterop=true,env=node,forceLong=bigint,useExactTypes=false \
  "${files[@]}"
