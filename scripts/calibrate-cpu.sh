#!/usr/bin/env bash
# Real contention on this host's CPU, in one invocation: `mica calibrate` on the three
# torch CPU units of config/tiny-cpu-contention.toml (every unit alone, every pair, the
# triple; batch 1, 4, 16; batch 4 and the triple held out), then at batch 16 every set
# under round_robin (every unit of the set busy: the "measured" figure of each set),
# contention_aware predicting with the calibrated platform, and adaptive measured over
# the 10 s that follow its first 30 s. Prints a summary; everything lands in OUT.
#
#   scripts/calibrate-cpu.sh [OUT]        (default out/calibrate-cpu)
#
# Needs a `--features torch` build of mica (MICA, default target-torch/debug/mica) and
# libtorch (scripts/fetch-libtorch.sh; MICA_LIBTORCH_CACHE to reuse a cache).
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"
out="${1:-out/calibrate-cpu}"
mica="${MICA:-$repo_root/target-torch/debug/mica}"
config=config/tiny-cpu-contention.toml
eval "$(scripts/fetch-libtorch.sh)"
mkdir -p "$out"
out="$(cd "$out" && pwd)"

echo "==> mica calibrate" >&2
"$mica" calibrate --config "$config" --batch-sizes 1,4,16 --holdout-batch-sizes 4 \
    --seconds 3 --warmup-seconds 1 --out "$out" --no-progress

bench() {
    local name="$1"
    shift
    "$mica" bench --config "$config" --batch-size 16 --concurrency 8 --json --no-progress \
        --no-metrics "$@" >"$out/bench-$name.json"
}
echo "==> every set at batch 16 (round_robin)" >&2
for set in cpu_a cpu_b cpu_c cpu_a,cpu_b cpu_a,cpu_c cpu_b,cpu_c cpu_a,cpu_b,cpu_c; do
    bench "rr-$set" --units "$set" --policy round_robin --warmup 1s --duration 5s
done
echo "==> contention_aware with the calibrated platform" >&2
MICA__PLATFORM__CONTENTION_FILE="$out/platform.toml" \
    bench contention_aware --policy contention_aware --warmup 1s --duration 10s
echo "==> contention_aware with no contention model (before calibration)" >&2
bench contention_aware-uncalibrated --policy contention_aware --warmup 1s --duration 10s
echo "==> adaptive: 30 s to search, then 10 s measured" >&2
bench adaptive --policy adaptive --warmup 30s --duration 10s

python3 - "$out" <<'PY'
import json, pathlib, sys
out = pathlib.Path(sys.argv[1])
def total(name):
    report = json.loads((out / f"bench-{name}.json").read_text())
    return report["total"]["throughput_img_s"], report
sets = ["cpu_a", "cpu_b", "cpu_c", "cpu_a,cpu_b", "cpu_a,cpu_c", "cpu_b,cpu_c", "cpu_a,cpu_b,cpu_c"]
rows = {s: total("rr-" + s)[0] for s in sets}
best = max(rows, key=rows.get)
single = max((s for s in sets if "," not in s), key=rows.get)
print("batch 16, measured on this host (round_robin, every unit of the set busy):")
for s in sets:
    print(f"  {s:<20} {rows[s]:9.1f} img/s")
print(f"best set {best} {rows[best]:.1f}; best single unit {single} {rows[single]:.1f}")
for name in ["contention_aware", "contention_aware-uncalibrated", "adaptive"]:
    t, report = total(name)
    busy = [u for u, s in report["units"].items() if s["images"] > 0]
    print(f"{name:<30} {t:9.1f} img/s = {t / rows[best]:.3f} x best set, "
          f"{t / rows[single]:.3f} x best single; busy {'+'.join(busy)}")
PY
