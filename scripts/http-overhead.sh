#!/usr/bin/env bash
# HTTP overhead of `mica serve` with the null engine, against an actix-web route that
# answers at once (the ceiling, examples/http_ceiling.rs), measured the same way in the
# same run: `mica bench --url` (closed loop, concurrency 16) and wrk (Debian package,
# with scripts/wrk-infer.lua posting a binary infer body). Loopback only.
#
#   bash scripts/http-overhead.sh [seconds]      (default 10 per measurement)
set -euo pipefail
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"
seconds="${1:-10}"
if ! command -v wrk >/dev/null; then
    if [[ "$(id -u)" == 0 ]]; then apt-get update -qq && apt-get install -y -qq wrk >/dev/null; fi
fi
cargo build -q --release --bin mica --example http_ceiling
target="${CARGO_TARGET_DIR:-$repo_root/target}/release"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
mica_port=$(free_port); metrics_port=$(free_port); ceiling_port=$(free_port)

MICA__SERVER__GRPC_PORT=0 MICA__SERVER__PORT=$mica_port MICA__METRICS__PORT=$metrics_port \
    "$target/mica" serve --config config/null.toml >/tmp/mica-overhead.log 2>&1 &
mica=$!
"$target/examples/http_ceiling" "127.0.0.1:$ceiling_port" >/dev/null 2>&1 &
ceiling=$!
trap 'kill $mica $ceiling 2>/dev/null || true; wait 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do
    curl -sf "http://127.0.0.1:$mica_port/v2/health/ready" >/dev/null && curl -sf "http://127.0.0.1:$ceiling_port/v2/models/null" >/dev/null && break
    sleep 0.1
done

declare -A rps p99
measure() { # name url
    local name=$1 url=$2 json
    json=$("$target/mica" bench --url "$url" --model null --concurrency 16 --duration "${seconds}s" --warmup 1s --no-progress --json)
    rps[$name-bench]=$(python3 -c 'import json,sys; d=json.loads(sys.argv[1]); print("%.0f" % (d["total"]["requests"]/d["duration_s"]))' "$json")
    p99[$name-bench]=$(python3 -c 'import json,sys; d=json.loads(sys.argv[1]); print("%.3fms" % d["total"]["p99_ms"])' "$json")
    if command -v wrk >/dev/null; then
        local out
        out=$(wrk -t2 -c16 -d"${seconds}s" --latency -s scripts/wrk-infer.lua "$url" -- model=null input=input shape=1,4 mode=binary)
        rps[$name-wrk]=$(awk '/Requests\/sec/ {printf "%.0f", $2}' <<<"$out")
        p99[$name-wrk]=$(awk '$1=="99%" {print $2}' <<<"$out")
        if grep -q "Non-2xx" <<<"$out"; then echo "$name: wrk saw non-2xx answers:"; grep "Non-2xx" <<<"$out"; fi
    fi
}
measure ceiling "http://127.0.0.1:$ceiling_port"
measure mica "http://127.0.0.1:$mica_port"

printf '\nHTTP overhead, concurrency 16, %ss each, %s cores (%s)\n' "$seconds" "$(nproc)" "$(date -u +%F)"
printf '%-22s %12s %12s %10s\n' "client" "ceiling r/s" "mica r/s" "ratio"
for client in bench wrk; do
    [[ -n "${rps[ceiling-$client]:-}" ]] || continue
    ratio=$(python3 -c "print('%.2f' % (${rps[mica-$client]} / ${rps[ceiling-$client]}))")
    printf '%-22s %12s %12s %10s   p99 ceiling %s, mica %s\n' "$client" "${rps[ceiling-$client]}" "${rps[mica-$client]}" "$ratio" "${p99[ceiling-$client]}" "${p99[mica-$client]}"
done
