#!/usr/bin/env bash
# Starts `mica serve` on simulated units on free loopback ports and runs Triton's own
# Python clients (tritonclient.http and tritonclient.grpc, unmodified) against it:
# scripts/tritonclient_check.py, scripts/tritonclient_grpc_check.py. Then the same
# checks against an in-process server on a deterministic fake backend, where the HTTP
# and gRPC answers to the same request must be equal (tests/serve_tritonclient.rs).
set -euo pipefail
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"

venv="$repo_root/.cache/venv"
if [[ ! -x "$venv/bin/python" ]]; then
    python3 -m venv "$venv"
fi
"$venv/bin/python" -m pip install -q --disable-pip-version-check 'tritonclient[http,grpc]' numpy pillow

cargo build -q --bin mica
binary="${CARGO_TARGET_DIR:-$repo_root/target}/debug/mica"
port=$("$venv/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
metrics_port=$("$venv/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
grpc_port=$("$venv/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
log="$(mktemp)"
MICA__SERVER__PORT="$port" MICA__SERVER__GRPC_PORT="$grpc_port" MICA__METRICS__PORT="$metrics_port" \
    "$binary" serve --config config/orin-agx-sim.toml >"$log" 2>&1 &
server=$!
cleanup() { kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; rm -f "$log"; }
trap cleanup EXIT
for _ in $(seq 1 100); do
    if curl -sf "http://127.0.0.1:$port/v2/health/ready" >/dev/null; then break; fi
    if ! kill -0 "$server" 2>/dev/null; then cat "$log"; echo "mica serve exited early" >&2; exit 1; fi
    sleep 0.1
done
"$venv/bin/python" scripts/tritonclient_check.py --url "127.0.0.1:$port" --model resnet50 || { cat "$log"; exit 1; }
"$venv/bin/python" scripts/tritonclient_grpc_check.py --grpc-url "127.0.0.1:$grpc_port" \
    --http-url "127.0.0.1:$port" --model resnet50 || { cat "$log"; exit 1; }
kill -0 "$server" || { cat "$log"; echo "mica serve died during the checks" >&2; exit 1; }
PYTHON="$venv/bin/python" MICA_REQUIRE_TRITONCLIENT=1 cargo test -q --test serve_tritonclient
# The tiny ONNX model on real onnx units, through tritonclient (ONNX Runtime from
# scripts/fetch-onnxruntime.sh, which test.sh ran first).
PYTHON="$venv/bin/python" MICA_REQUIRE_TRITONCLIENT=1 MICA_REQUIRE_ONNXRUNTIME=1 \
    cargo test -q --test serve_onnx
