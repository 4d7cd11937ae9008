#!/usr/bin/env bash
# gRPC overhead of `mica serve` with the null engine, against a bare tonic route that
# answers at once (examples/grpc_ceiling.rs), with HTTP's ratio against a bare actix
# route (examples/http_ceiling.rs) measured in the same run beside it, and streaming
# throughput beside unary. Every figure is `mica bench --url` (closed loop,
# concurrency 16, one-image requests, binary tensors). Loopback only.
#
#   bash scripts/grpc-overhead.sh [seconds]      (default 10 per measurement)
set -euo pipefail
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"
seconds="${1:-10}"
cargo build -q --release --bin mica --example http_ceiling --example grpc_ceiling
target="${CARGO_TARGET_DIR:-$repo_root/target}/release"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
http_port=$(free_port); grpc_port=$(free_port); metrics_port=$(free_port)
http_ceiling=$(free_port); grpc_ceiling=$(free_port)

MICA__SERVER__PORT=$http_port MICA__SERVER__GRPC_PORT=$grpc_port MICA__METRICS__PORT=$metrics_port \
    "$target/mica" serve --config config/null.toml >/tmp/mica-grpc-overhead.log 2>&1 &
mica=$!
"$target/examples/http_ceiling" "127.0.0.1:$http_ceiling" >/dev/null 2>&1 &
hc=$!
"$target/examples/grpc_ceiling" "127.0.0.1:$grpc_ceiling" >/dev/null 2>&1 &
gc=$!
trap 'kill $mica $hc $gc 2>/dev/null || true; wait 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do
    curl -sf "http://127.0.0.1:$http_port/v2/health/ready" >/dev/null \
        && curl -sf "http://127.0.0.1:$http_ceiling/v2/models/null" >/dev/null && break
    sleep 0.1
done
sleep 0.5

declare -A rps p99
measure() { # name url
    local json
    json=$("$target/mica" bench --url "$2" --model null --concurrency 16 --duration "${seconds}s" --warmup 1s --no-progress --json)
    rps[$1]=$(python3 -c 'import json,sys; d=json.loads(sys.argv[1]); print("%.0f" % (d["total"]["requests"]/d["duration_s"]))' "$json")
    p99[$1]=$(python3 -c 'import json,sys; d=json.loads(sys.argv[1]); print("%.3f" % d["total"]["p99_ms"])' "$json")
    local failed
    failed=$(python3 -c 'import json,sys; d=json.loads(sys.argv[1]); print(d["failed_requests"] + d["rejected_requests"])' "$json")
    [[ "$failed" == 0 ]] || echo "$1: $failed requests failed" >&2
}
measure http-ceiling "http://127.0.0.1:$http_ceiling"
measure http-mica "http://127.0.0.1:$http_port"
measure grpc-ceiling "grpc://127.0.0.1:$grpc_ceiling"
measure grpc-mica "grpc://127.0.0.1:$grpc_port"
measure stream-ceiling "grpc-stream://127.0.0.1:$grpc_ceiling"
measure stream-mica "grpc-stream://127.0.0.1:$grpc_port"

printf '\nFront-end overhead, null engine, mica bench concurrency 16, %ss each, %s cores (%s)\n' \
    "$seconds" "$(nproc)" "$(date -u +%F)"
printf '%-20s %12s %12s %8s %18s\n' "route" "ceiling r/s" "mica r/s" "ratio" "p99 ms ceil/mica"
for name in http grpc stream; do
    ratio=$(python3 -c "print('%.2f' % (${rps[$name-mica]} / ${rps[$name-ceiling]}))")
    label=$name; [[ $name == http ]] && label="HTTP unary"; [[ $name == grpc ]] && label="gRPC unary"
    [[ $name == stream ]] && label="gRPC stream"
    printf '%-20s %12s %12s %8s %18s\n' "$label" "${rps[$name-ceiling]}" "${rps[$name-mica]}" "$ratio" \
        "${p99[$name-ceiling]}/${p99[$name-mica]}"
done
