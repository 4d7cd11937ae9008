#!/usr/bin/env bash
# Issue 14's GPU part on the GPU machine: real contention among the torch units of
# config/gpu.toml (cpu, cuda_fp32, tensor_fp16, amp, tensor_bf16 on one GPU),
#   1. export ResNet-50 (random seeded weights) as config/gpu.toml expects
#   2. `mica calibrate` over those units at batch 8, 64 and 256 (64 held out), within a
#      time budget: every unit alone, every pair, and the set of every unit that takes
#      each batch size; the fit and its error on the held-out runs (report.md)
#   3. at each batch size of $BATCHES: every unit alone (round_robin) -> the best single
#      unit measured in this call; contention_aware with the calibrated platform; then
#      adaptive measured over the 10 s after its first 30 s; then contention_aware with
#      the shipped model (the before figure), as time allows
#   4. a table: best policy / best single unit per batch size, adaptive against
#      contention_aware
#
# Usage: bash .device-calibrate/device-calibrate.sh      (binary in .device-calibrate/mica)
# Environment: OUT, DEVICE_BUDGET_S (default 560: later steps skip themselves),
#   CALIBRATE_BUDGET_S (default 200), BATCHES (default "8 64 256"), ALONE (the units
#   measured alone, default all), ADAPTIVE_BATCHES (default BATCHES; after every
#   batch size's alone and contention_aware runs),
#   PLATFORM (a calibrated platform.toml from an earlier call: step 2 is skipped), PYTHON.
set -uo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$here/device-common.sh"
device_start device-calibrate "${DEVICE_BUDGET_S:-560}"
bin="$here/mica"
units=cpu,cuda_fp32,tensor_fp16,amp,tensor_bf16
config=config/gpu.toml
torch_lib="$("$python" -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')"
export LD_LIBRARY_PATH="$torch_lib:${LD_LIBRARY_PATH:-}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader

step "export ResNet-50"
"$python" "$here/export_model.py" --out models 2>&1 | grep -E "^wrote" | tail -3

platform="${PLATFORM:-}"
if [[ -z $platform ]]; then
    step "mica calibrate ($units; batch 8, 64, 256; budget ${CALIBRATE_BUDGET_S:-200} s)"
    calibrate=("$bin" calibrate --config "$config" --units "$units" --batch-sizes 8,64,256
        --holdout-batch-sizes 64 --seconds 2 --warmup-seconds 1
        --budget "${CALIBRATE_BUDGET_S:-200}" --out "$out/calibrate" --no-progress)
    typed "${calibrate[@]}"
    "${calibrate[@]}" >"$out/calibrate.log" 2>&1
    echo "calibrate exit: $?"
    tail -40 "$out/calibrate/report.md" 2>/dev/null || tail -20 "$out/calibrate.log"
    platform="$out/calibrate/platform.toml"
else
    step "calibrated platform from an earlier call: $platform"
fi

show() { # a bench JSON -> one line: throughput, the units that ran, failures
    "$python" - "$1" <<'PY' 2>/dev/null ||
import json, sys
r = json.load(open(sys.argv[1]))
t = r["total"]
busy = "+".join(u for u, s in r["units"].items() if s["images"] > 0)
print(f"    {t['throughput_img_s']:9.0f} img/s  p50 {t['p50_ms']:8.2f} ms  "
      f"units {busy}  failed {r['failed_requests']}")
PY
        { echo "    FAILED: see ${1%.json}.log"; tail -n 3 "${1%.json}.log" 2>/dev/null | sed 's/^/    /'; }
}
bench() { # name batch args...
    local name=$1 batch=$2
    shift 2
    "$bin" bench --config "$config" --units "$units" --batch-size "$batch" --json \
        --no-progress --no-metrics "$@" >"$out/bench-$name-b$batch.json" 2>"$out/bench-$name-b$batch.log"
    show "$out/bench-$name-b$batch.json"
}
for batch in ${BATCHES:-8 64 256}; do
    for unit in ${ALONE:-${units//,/ }}; do
        over_budget && break
        [[ $unit == cpu && $batch -gt 8 ]] && continue
        step "alone: $unit at batch $batch"
        "$bin" bench --config "$config" --units "$unit" --batch-size "$batch" --json \
            --no-progress --no-metrics --policy round_robin --warmup 1s --duration 4s \
            >"$out/bench-alone-$unit-b$batch.json" 2>"$out/bench-alone-$unit-b$batch.log"
        show "$out/bench-alone-$unit-b$batch.json"
    done
    over_budget && break
    if [[ -f $platform ]]; then
        step "contention_aware (calibrated platform) at batch $batch"
        MICA__PLATFORM__CONTENTION_FILE="$platform" \
            bench contention_aware "$batch" --policy contention_aware --warmup 2s --duration 6s
    fi
done
for batch in ${ADAPTIVE_BATCHES-${BATCHES:-8 64 256}}; do
    over_budget && break
    step "adaptive at batch $batch: 30 s to search, 10 s measured"
    bench adaptive "$batch" --policy adaptive --warmup 30s --duration 10s
done
for batch in ${BATCHES:-8 64 256}; do
    over_budget && break
    step "contention_aware (shipped model) at batch $batch"
    bench contention_aware-shipped "$batch" --policy contention_aware --warmup 2s --duration 6s
done

step "summary"
"$python" - "$out" <<'PY' | tee "$out/summary.md"
import json, pathlib, sys
out = pathlib.Path(sys.argv[1])
def read(path):
    try:
        return json.loads(path.read_text())
    except Exception:
        return None
print("| batch | best single unit (alone, measured) | contention_aware calibrated | "
      "contention_aware shipped model | adaptive after 30 s | best policy / best single |")
print("|---|---|---|---|---|---|")
for batch in (8, 64, 256):
    alone = {}
    for path in out.glob(f"bench-alone-*-b{batch}.json"):
        report = read(path)
        if report:
            alone[path.name[len("bench-alone-"):-len(f"-b{batch}.json")]] = report["total"]["throughput_img_s"]
    if not alone:
        continue
    best_unit = max(alone, key=alone.get)
    best = alone[best_unit]
    cells = []
    best_policy = None
    for name in ("contention_aware", "contention_aware-shipped", "adaptive"):
        report = read(out / f"bench-{name}-b{batch}.json")
        if report is None:
            cells.append("not run")
            continue
        t = report["total"]["throughput_img_s"]
        busy = "+".join(u for u, s in report["units"].items() if s["images"] > 0)
        cells.append(f"{t:.0f} img/s = {t / best:.3f}x ({busy}; failed {report['failed_requests']})")
        if name != "contention_aware-shipped" and (best_policy is None or t > best_policy[1]):
            best_policy = (name, t)
    cells.append("not run" if best_policy is None
                 else f"{best_policy[1] / best:.3f} ({best_policy[0]})")
    print(f"| {batch} | {best_unit} {best:.0f} img/s | " + " | ".join(cells) + " |")
PY
device_finish
