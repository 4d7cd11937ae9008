#!/usr/bin/env bash
# ResNet-50 FP32 on the onnx engine's CPU unit against ONNX Runtime's own Python API,
# same library, model, input and thread count, in one run on one machine (issue 12):
#   1. export ResNet-50 to ONNX (random seeded weights; scripts/export_model.py --onnx)
#   2. find the Python onnxruntime's libonnxruntime.so and point mica at it
#      (ORT_DYLIB_PATH): both sides run the very same library
#   3. for ROUNDS rounds, alternating: the Python reference, then `mica bench` (the full
#      path: dispatcher, unit actor, stream worker, engine) at batch 1 and 8, one client
#   4. a table: throughput at batch 1 and 8, batch-1 p50 latency, mica / ONNX Runtime
#      (medians over the rounds)
#   5. config/orin-agx.toml on this host (no TensorRT, a CPU-only ONNX Runtime): `mica
#      check`, `mica units`, then `mica serve`: which units load, which do not and why,
#      and an inference on what is left
#
# Usage (on the GPU machine; the carried binary in .device-onnx/mica):
#   bash scripts/device-onnx.sh [THREADS] [SECONDS] [ROUNDS]     defaults 16 10 2
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/device-common.sh"
device_start onnx 560
bin="${MICA_BIN:-$repo_root/.device-onnx/mica}"
threads="${1:-16}"
seconds="${2:-10}"
rounds="${3:-2}"

step "export ResNet-50 to ONNX (dynamic batch, and batch 8 for the DLA units)"
"$python" scripts/export_model.py --onnx --onnx-batches 8 --out "$repo_root/models" 2>&1 \
    | grep -v Warning || true
model="$repo_root/models/resnet50.onnx"
[[ -f $model ]] || { echo "error: $model was not written" >&2; exit 1; }

step "the Python onnxruntime's library"
ORT_DYLIB_PATH="$("$python" - <<'PY'
import glob, os, onnxruntime
capi = os.path.join(os.path.dirname(onnxruntime.__file__), "capi")
print(sorted(glob.glob(os.path.join(capi, "libonnxruntime.so.*")))[-1])
PY
)"
export ORT_DYLIB_PATH
echo "ORT_DYLIB_PATH=$ORT_DYLIB_PATH"
nproc
lscpu | grep -E "Model name|^CPU\(s\)|Thread|Core" || true

config="$out/resnet50-onnx-cpu.toml"
cat >"$config" <<TOML
# Written by scripts/device-onnx.sh: ResNet-50 FP32 on one onnx CPU unit.
[platform]
name = "GPU machine's CPU, one onnx unit"
[scheduler]
policy = { type = "round_robin" }
max_queue_delay_us = 0
[model]
name = "resnet50"
input_shape = [3, 224, 224]
output_shape = [1000]
max_batch = 8
[[units]]
id = "cpu"
kind = "cpu"
engine = { type = "onnx", model = "$model", provider = "cpu", intra_threads = $threads, warmup_batches = 3 }
streams = 1
max_batch = 8
TOML
"$bin" check -c "$config"

for round in $(seq 1 "$rounds"); do
    step "round $round: ONNX Runtime Python, batch 1 and 8"
    "$python" scripts/onnx_reference.py "$model" --threads "$threads" --batches 1,8 \
        --duration "$seconds" | tee "$out/reference_r$round.jsonl"
    for batch in 1 8; do
        step "round $round: mica bench, batch $batch"
        typed "$bin" bench -c "$config" --batch-size "$batch" --concurrency 1 \
            --duration "${seconds}s" --warmup 2s --json --no-progress
        "$bin" bench -c "$config" --batch-size "$batch" --concurrency 1 \
            --duration "${seconds}s" --warmup 2s --json --no-progress \
            >"$out/mica_b${batch}_r$round.json" 2>"$out/mica_b${batch}_r$round.log"
        "$python" -c "import json,sys; t=json.load(open(sys.argv[1]))['total']; print(f\"mica b$batch: {t['throughput_img_s']:.1f} img/s, p50 {t['p50_ms']} ms\")" \
            "$out/mica_b${batch}_r$round.json"
        if [[ -x ${ONNX_RATE:-} ]]; then
            # The engine alone (no scheduler, no actors): engines/examples/onnx_rate.rs.
            "$ONNX_RATE" "$model" 3,224,224 1000 "$threads" "$batch" "$seconds" \
                | tee "$out/engine_b${batch}_r$round.json" | sed "s/^/engine alone: /"
        fi
    done
done

step "config/orin-agx.toml here: check, units, serve"
typed "$bin" check -c config/orin-agx.toml
"$bin" check -c config/orin-agx.toml 2>&1 | tee "$out/orin-check.txt"
"$bin" units -c config/orin-agx.toml >"$out/orin-units.txt" 2>&1 || true
grep -E "^[a-z0-9]+ —|runs on|not run on hardware" "$out/orin-units.txt" || true
port=18000
MICA__SERVER__PORT=$port MICA__METRICS__PORT=18002 "$bin" serve -c config/orin-agx.toml \
    >"$out/orin-serve-stdout.txt" 2>"$out/orin-serve.log" &
server=$!
ready=""
for _ in $(seq 1 600); do
    code=$(curl -s -o "$out/orin-ready.json" -w '%{http_code}' "http://127.0.0.1:$port/v2/health/ready" || true)
    if [[ $code == 200 ]]; then ready=yes; break; fi
    kill -0 "$server" 2>/dev/null || break
    sleep 0.2
done
echo "ready: ${ready:-no}"; cat "$out/orin-ready.json"; echo
"$python" - "$port" <<'PY' | tee "$out/orin-infer.txt"
import json, sys, urllib.request
body = json.dumps({"inputs": [{"name": "input", "shape": [1, 3, 224, 224], "datatype": "FP32",
                               "data": [0.5] * (3 * 224 * 224)}]}).encode()
request = urllib.request.Request(f"http://127.0.0.1:{sys.argv[1]}/v2/models/resnet50/infer",
                                 body, {"Content-Type": "application/json"})
answer = json.load(urllib.request.urlopen(request, timeout=60))
output = answer["outputs"][0]
print(f"infer: 200, output {output['name']} shape {output['shape']}, first {output['data'][:3]}")
PY
grep -E "engine failed to load|serving without it|ready on the|onnx runtime loaded" "$out/orin-serve.log" \
    | sed -e 's/\x1b\[[0-9;]*m//g' | cut -c1-400 || true
cat "$out/orin-serve-stdout.txt"
kill -TERM "$server"; wait "$server"; echo "mica serve exit: $?"

step "report"
"$python" - "$out" "$rounds" "$threads" <<'PY' | tee "$out/report.md"
import json, pathlib, statistics, sys
out, rounds, threads = pathlib.Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
ref = {1: [], 8: []}
for r in range(1, rounds + 1):
    for line in (out / f"reference_r{r}.jsonl").read_text().splitlines():
        row = json.loads(line)
        ref[row["batch"]].append(row)
mica = {b: [json.load(open(out / f"mica_b{b}_r{r}.json"))["total"] for r in range(1, rounds + 1)]
        for b in (1, 8)}
engine = {b: [json.load(open(p)) for p in sorted(out.glob(f"engine_b{b}_r*.json"))] for b in (1, 8)}
med = statistics.median
version = ref[1][0]["onnxruntime"]
print(f"ResNet-50 FP32, ONNX Runtime {version} CPU provider, {threads} intra-op threads, "
      f"one client, medians of {rounds} alternating rounds\n")
print("| figure | ONNX Runtime (Python) | mica (onnx unit, bench) | mica / ORT |")
print("|---|---|---|---|")
for b in (1, 8):
    r = med(x["throughput_img_s"] for x in ref[b])
    m = med(x["throughput_img_s"] for x in mica[b])
    print(f"| throughput, batch {b} (img/s) | {r:.1f} | {m:.1f} | {m / r:.3f} |")
r = med(x["p50_ms"] for x in ref[1])
m = med(x["p50_ms"] for x in mica[1])
print(f"| p50 latency, batch 1 (ms) | {r:.2f} | {m:.2f} | {r / m:.3f} (ORT/mica) |")
if engine[1]:
    print("\nThe onnx engine alone (engines/examples/onnx_rate.rs, no scheduler), same rounds:\n")
    print("| figure | ONNX Runtime (Python) | onnx engine alone | engine / ORT |")
    print("|---|---|---|---|")
    for b in (1, 8):
        r = med(x["throughput_img_s"] for x in ref[b])
        e = med(x["throughput_img_s"] for x in engine[b])
        print(f"| throughput, batch {b} (img/s) | {r:.1f} | {e:.1f} | {e / r:.3f} |")
PY
device_finish
