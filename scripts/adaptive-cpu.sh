#!/usr/bin/env bash
# `adaptive` against the sets it chooses from, on real CPU units that contend for the
# same cores: the three ONNX Runtime CPU units of config/tiny-onnx-cpu-contention.toml,
# batch 16, 8 closed-loop clients. On a shared, noisy host a figure measured minutes
# apart from another says little, so everything is interleaved and compared pair by
# pair:
#   1. ROUNDS rounds over every set of units under round_robin (every unit of the set
#      busy), SET_SECONDS each; a set's figure is its median over the rounds.
#   2. PAIRS times: adaptive for SEARCH_SECONDS of warm-up (its search) and
#      MEASURE_SECONDS measured, then round_robin on the set adaptive kept and on the
#      best set of step 1, MEASURE_SECONDS each, right after it: the ratios are per pair.
# Prints a summary; every run's JSON lands in OUT.
#
#   scripts/adaptive-cpu.sh [OUT]          (default out/adaptive-cpu)
#
# Needs the mica binary (MICA, default target/debug/mica: `cargo build --bin mica`) and
# ONNX Runtime (scripts/fetch-onnxruntime.sh; MICA_ONNXRUNTIME_CACHE to reuse a cache).
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"
out="${1:-out/adaptive-cpu}"
mica="${MICA:-${CARGO_TARGET_DIR:-$repo_root/target}/debug/mica}"
config=config/tiny-onnx-cpu-contention.toml
rounds="${ROUNDS:-3}"
pairs="${PAIRS:-3}"
set_seconds="${SET_SECONDS:-4}"
search_seconds="${SEARCH_SECONDS:-30}"
measure_seconds="${MEASURE_SECONDS:-10}"
if [[ ! -x $mica ]]; then
    echo "error: no mica binary at $mica (cargo build --bin mica, or set MICA)" >&2
    exit 1
fi
eval "$(scripts/fetch-onnxruntime.sh)"
mkdir -p "$out"
out="$(cd "$out" && pwd)"

bench() { # name warmup_s duration_s args...
    local name=$1 warmup=$2 duration=$3
    shift 3
    "$mica" bench --config "$config" --batch-size 16 --concurrency 8 --json --no-progress \
        --no-metrics --warmup "${warmup}s" --duration "${duration}s" "$@" >"$out/$name.json"
}
busy_set() { # the units of a run that ran a batch, comma-separated
    python3 -c 'import json, sys
report = json.load(open(sys.argv[1]))
print(",".join(u for u, s in report["units"].items() if s["images"] > 0))' "$1"
}

sets=(cpu_a cpu_b cpu_c cpu_a,cpu_b cpu_a,cpu_c cpu_b,cpu_c cpu_a,cpu_b,cpu_c)
for round in $(seq 1 "$rounds"); do
    echo "==> round $round of $rounds: every set under round_robin, ${set_seconds} s each" >&2
    for set in "${sets[@]}"; do
        bench "rr-$set-r$round" 1 "$set_seconds" --units "$set" --policy round_robin
    done
done
best=$(python3 - "$out" "$rounds" "${sets[@]}" <<'PY'
import json, statistics, sys
out, rounds, sets = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
def median(s):
    return statistics.median(json.load(open(f"{out}/rr-{s}-r{r}.json"))["total"]["throughput_img_s"]
                             for r in range(1, rounds + 1))
print(max(sets, key=median))
PY
)
echo "    best set by median: $best" >&2
for pair in $(seq 1 "$pairs"); do
    echo "==> pair $pair of $pairs: adaptive (${search_seconds} s search, ${measure_seconds} s measured), then round_robin on its set and on $best" >&2
    bench "adaptive-p$pair" "$search_seconds" "$measure_seconds" --policy adaptive
    kept=$(busy_set "$out/adaptive-p$pair.json")
    echo "    adaptive kept $kept" >&2
    bench "rr-kept-p$pair" 1 "$measure_seconds" --units "$kept" --policy round_robin
    bench "rr-best-p$pair" 1 "$measure_seconds" --units "$best" --policy round_robin
done

python3 - "$out" "$rounds" "$pairs" "$best" "${sets[@]}" <<'PY'
import json, statistics, sys
out, rounds, pairs, best, sets = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5:]
load = lambda name: json.load(open(f"{out}/{name}.json"))
rate = lambda name: load(name)["total"]["throughput_img_s"]
print(f"every set under round_robin, batch 16, median of {rounds} interleaved rounds (min-max):")
for s in sets:
    values = [rate(f"rr-{s}-r{r}") for r in range(1, rounds + 1)]
    print(f"  {s:<20} {statistics.median(values):9.1f} img/s  ({min(values):.1f}-{max(values):.1f})")
print(f"best set: {best}")
print("adaptive, pair by pair (its measured window after the search):")
kept_ratios, best_ratios = [], []
for p in range(1, pairs + 1):
    report = load(f"adaptive-p{p}")
    kept = ",".join(u for u, s in report["units"].items() if s["images"] > 0)
    search = report["context"].get("search", {})
    a, k, b = rate(f"adaptive-p{p}"), rate(f"rr-kept-p{p}"), rate(f"rr-best-p{p}")
    kept_ratios.append(a / k)
    best_ratios.append(a / b)
    print(f"  pair {p}: adaptive {a:9.1f} img/s on {kept:<20} converged={search.get('converged')} "
          f"after {search.get('batches')} batches; round_robin on it {k:9.1f} ({a / k:.3f}); "
          f"on {best} {b:9.1f} ({a / b:.3f})")
print(f"median adaptive / round_robin on its own set: {statistics.median(kept_ratios):.3f}")
print(f"median adaptive / best set measured beside it: {statistics.median(best_ratios):.3f}")
PY
