#!/usr/bin/env bash
# Issue 14's GPU part, in one call on the GPU machine: real contention among the torch
# units of config/gpu.toml (cpu, cuda_fp32, tensor_fp16, amp, tensor_bf16 on one GPU),
#   1. export ResNet-50 (random seeded weights) as config/gpu.toml expects
#   2. `mica calibrate` over those units at batch 8, 64 and 256 (64 held out), within a
#      time budget: every unit alone, then pairs and larger sets as time allows; the fit
#      and its error on the held-out runs (report.md)
#   3. at batch 64 and 256: every unit alone (round_robin) -> the best single unit
#      measured in this call; contention_aware with the calibrated platform; adaptive
#      measured over the 10 s after its first 30 s
#   4. a table: best policy / best single unit per batch size, adaptive against
#      contention_aware
#
# Usage: bash .device-calibrate/device-calibrate.sh      (binary in .device-calibrate/mica)
# Environment: OUT, CALIBRATE_BUDGET_S (default 200), PYTHON.
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

step "mica calibrate ($units; batch 8, 64, 256; budget ${CALIBRATE_BUDGET_S:-200} s)"
typed "$bin" calibrate --config "$config" --units "$units" --batch-sizes 8,64,256 \
    --holdout-batch-sizes 64 --seconds 2 --warmup-seconds 1 \
    --budget "${CALIBRATE_BUDGET_S:-200}" --out "$out/calibrate" --no-progress
"$bin" calibrate --config "$config" --units "$units" --batch-sizes 8,64,256 \
    --holdout-batch-sizes 64 --seconds 2 --warmup-seconds 1 \
    --budget "${CALIBRATE_BUDGET_S:-200}" --out "$out/calibrate" --no-progress \
    >"$out/calibrate.log" 2>&1
echo "calibrate exit: $?"
tail -30 "$out/calibrate/report.md" 2>/dev/null || tail -20 "$out/calibrate.log"

bench() { # name batch args...
    local name=$1 batch=$2
    shift 2
    "$bin" bench --config "$config" --units "$units" --batch-size "$batch" --json \
        --no-progress --no-metrics "$@" >"$out/bench-$name-b$batch.json" 2>"$out/bench-$name-b$batch.log"
}
for batch in 64 256; do
    for unit in ${units//,/ }; do
        over_budget && break
        [[ $unit == cpu && $batch -gt 8 ]] && continue
        step "alone: $unit at batch $batch"
        "$bin" bench --config "$config" --units "$unit" --batch-size "$batch" --json \
            --no-progress --no-metrics --policy round_robin --warmup 2s --duration 5s \
            >"$out/bench-alone-$unit-b$batch.json" 2>"$out/bench-alone-$unit-b$batch.log"
    done
    over_budget && break
    step "contention_aware (calibrated platform) at batch $batch"
    if [[ -f "$out/calibrate/platform.toml" ]]; then
        MICA__PLATFORM__CONTENTION_FILE="$out/calibrate/platform.toml" \
            bench contention_aware "$batch" --policy contention_aware --warmup 2s --duration 8s
    fi
    step "contention_aware (shipped model) at batch $batch"
    bench contention_aware-shipped "$batch" --policy contention_aware --warmup 2s --duration 8s
    over_budget && break
    step "adaptive at batch $batch: 30 s to search, 10 s measured"
    bench adaptive "$batch" --policy adaptive --warmup 30s --duration 10s
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
      "contention_aware shipped model | adaptive after 30 s |")
print("|---|---|---|---|---|")
for batch in (64, 256):
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
    for name in ("contention_aware", "contention_aware-shipped", "adaptive"):
        report = read(out / f"bench-{name}-b{batch}.json")
        if report is None:
            cells.append("not run")
            continue
        t = report["total"]["throughput_img_s"]
        busy = "+".join(u for u, s in report["units"].items() if s["images"] > 0)
        cells.append(f"{t:.0f} img/s = {t / best:.3f}x ({busy})")
    print(f"| {batch} | {best_unit} {best:.0f} img/s | " + " | ".join(cells) + " |")
PY
device_finish
