#!/usr/bin/env bash
# The onnx engine's GPU paths on the GPU machine, with ONNX Runtime 1.31.1's GPU build
# (the PyPI onnxruntime-gpu wheel's libraries, carried in pieces: its CUDA provider alone
# is 284 MB; xz-compressed, unpacked with Python's lzma) and the CUDA 13 / cuDNN 9 libraries that PyTorch's wheels installed there:
#   1. reassemble the libraries (sha256 checked)
#   2. export ResNet-50 to ONNX (random seeded weights)
#   3. a config with a cuda_fp32 and a cuda_tf32 unit on the CUDA provider and a
#      tensor_fp16 unit on TensorRT (libnvinfer is not installed there: that unit must
#      fail to load, named with its cause, while the others serve)
#   4. agreement: one seeded batch through `mica serve` on each CUDA unit against ONNX
#      Runtime's Python API on the CPU provider (same model), relative L2 error
#   5. throughput: `mica bench` on each CUDA unit at batch 1, 8, 64 (two clients)
#
# Usage: bash scripts/device-onnx-cuda.sh STORE   (STORE holds cuda.so.xz.part*;
# .device-onnx/ortgpu/ the rest; the binary in .device-onnx/mica)
set -uo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/device-common.sh"
device_start onnx-cuda 400
bin="$repo_root/.device-onnx/mica"
store="${1:?the folder holding cuda.so.xz.part*}"
carried="$repo_root/.device-onnx/ortgpu"
lib="$work/ort"
mkdir -p "$lib"

step "reassemble ONNX Runtime 1.31.1 GPU"
cat "$store"/cuda.so.xz.part* >"$work/cuda.so.xz"
sed "s|cuda.so.xz|$work/cuda.so.xz|" "$carried/cuda.sha" | sha256sum -c --quiet || exit 1
echo "sha256 ok"
unxz() { "$python" -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], "wb"))' "$1" "$2"; }
unxz "$work/cuda.so.xz" "$lib/libonnxruntime_providers_cuda.so" || exit 1
unxz "$carried/libort.xz" "$lib/libonnxruntime.so.1.31.1" || exit 1
cp "$carried"/libonnxruntime_providers_{shared,tensorrt}.so "$lib/"
ls -la "$lib"
site="$("$python" -c 'import os, torch; print(os.path.dirname(os.path.dirname(torch.__file__)))')"
nvidia_libs="$(find "$site/nvidia" -maxdepth 3 -type d -name lib 2>/dev/null | paste -sd:)"
export LD_LIBRARY_PATH="$lib:$site/torch/lib:$nvidia_libs:${LD_LIBRARY_PATH:-}"
export ORT_DYLIB_PATH="$lib/libonnxruntime.so.1.31.1"
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader

step "export ResNet-50 to ONNX"
if [[ ! -f models/resnet50.onnx ]]; then
    "$python" scripts/export_model.py --onnx --out models 2>&1 | grep -E "^wrote" || true
fi
model="$repo_root/models/resnet50.onnx"

config="$out/resnet50-onnx-gpu.toml"
cat >"$config" <<TOML
# Written by scripts/device-onnx-cuda.sh: ResNet-50 FP32 on the onnx engine's GPU units.
[platform]
name = "H200, onnx units (ONNX Runtime 1.31.1 GPU build)"
[scheduler]
policy = { type = "round_robin" }
max_queue_delay_us = 0
require_all_units = false
[model]
name = "resnet50"
input_shape = [3, 224, 224]
output_shape = [1000]
max_batch = 64
[server]
port = 18100
grpc_port = 0
[metrics]
enabled = false
[[units]]
id = "cuda_fp32"
kind = "cuda_fp32"
engine = { type = "onnx", model = "$model", provider = "cuda" }
max_batch = 64
[[units]]
id = "cuda_tf32"
kind = "cuda_tf32"
engine = { type = "onnx", model = "$model", provider = "cuda" }
max_batch = 64
[[units]]
id = "tensor_fp16"
kind = "tensor_fp16"
engine = { type = "onnx", model = "$model", provider = "tensorrt", engine_cache = "$work/trt" }
max_batch = 64
TOML
"$bin" check -c "$config"

step "agreement: mica serve on each CUDA unit vs ONNX Runtime Python (CPU provider)"
for unit in cuda_fp32 cuda_tf32; do
    "$bin" serve -c "$config" --units "$unit,tensor_fp16" >"$out/serve-$unit.out" 2>"$out/serve-$unit.log" &
    server=$!
    for _ in $(seq 1 900); do
        code=$(curl -s -o "$out/ready-$unit.json" -w '%{http_code}' http://127.0.0.1:18100/v2/health/ready || true)
        [[ $code == 200 ]] && break
        kill -0 "$server" 2>/dev/null || break
        sleep 0.2
    done
    echo "$unit ready: $code $(head -c 600 "$out/ready-$unit.json")"
    "$python" - "$model" "$unit" <<'PY' | tee -a "$out/agreement.txt"
import json, sys, urllib.request
import numpy, onnxruntime
model, unit = sys.argv[1], sys.argv[2]
x = numpy.random.default_rng(20261201).standard_normal((4, 3, 224, 224)).astype(numpy.float32)
reference = onnxruntime.InferenceSession(model, providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
body = json.dumps({"inputs": [{"name": "input", "shape": list(x.shape), "datatype": "FP32",
                               "data": x.ravel().tolist()}]}).encode()
request = urllib.request.Request("http://127.0.0.1:18100/v2/models/resnet50/infer", body,
                                 {"Content-Type": "application/json"})
got = numpy.array(json.load(urllib.request.urlopen(request, timeout=120))["outputs"][0]["data"],
                  dtype=numpy.float32).reshape(reference.shape)
error = float(numpy.linalg.norm(got - reference) / numpy.linalg.norm(reference))
same_top1 = int((got.argmax(1) == reference.argmax(1)).sum())
print(f"{unit}: relative L2 error vs ONNX Runtime CPU {error:.2e}, top-1 equal {same_top1}/4")
PY
    grep -E "engine failed to load|onnx runtime loaded|onnx engine loaded|warmed up" "$out/serve-$unit.log" \
        | sed -e 's/\x1b\[[0-9;]*m//g' | cut -c1-420
    kill -TERM "$server"; wait "$server"; echo "serve exit $?"
done

step "throughput: mica bench per CUDA unit"
for unit in cuda_fp32 cuda_tf32; do
    for batch in 1 8 64; do
        "$bin" bench -c "$config" --units "$unit" --batch-size "$batch" --concurrency 2 \
            --duration 6s --warmup 2s --json --no-progress >"$out/bench-$unit-b$batch.json" \
            2>"$out/bench-$unit-b$batch.log"
        "$python" -c "import json,sys; t=json.load(open(sys.argv[1]))['total']; print(f\"$unit batch $batch: {t['throughput_img_s']:.0f} img/s, p50 {t['p50_ms']} ms, failed {json.load(open(sys.argv[1]))['failed_requests']}\")" \
            "$out/bench-$unit-b$batch.json" 2>&1 | tee -a "$out/throughput.txt" \
            || tail -5 "$out/bench-$unit-b$batch.log"
    done
done
device_finish
