#!/usr/bin/env bash
# One device run of the pipelining work (issue 7): ResNet-50 split into 18 TorchScript
# blocks, run through mica's pipeline actors on a real GPU with the CPU side (pre- and
# post-processing threads) around it, everything in ONE call (same machine, same lease):
#
#   1. environment: nvidia-smi, the machine's torch; LD_LIBRARY_PATH=<torch>/lib
#   2. export ResNet-50 in blocks (random weights, seeded):
#      scripts/export_model.py --stages --out models   -> models/resnet50_stages/
#   3. the PyTorch reference (scripts/torch_reference.py: half NCHW, half channels-last,
#      FP32) on the whole network, so mica's figures have PyTorch's beside them
#   3b. `mica experiment pipeline` on the same configs: the discrete-event model's
#      prediction from the H100 profiles (SIMULATED; printed for comparison)
#   4. `mica tune --backend real --search exhaustive` on config/gpu-pipeline.toml: one
#      GPU, batch x streams x CPU threads, each point measured for POINT_S seconds
#   5. `mica serve` on the best configuration found, driven over HTTP by
#      `mica bench --url` (KServe v2, binary FP32 tensors), its per-stage series
#      scraped from /metrics
#   6. when `nvidia-smi -L` lists two GPUs or more: `mica tune --backend real` on
#      config/gpu2-pipeline.toml (blocks 0..cut on gpu0, the rest on gpu1; option gpu
#      = all on gpu1), ResNet-50 coarsened to 6 blocks (5 cut points); then the same
#      with `device_handoff = false` (stage boundaries through host memory)
#   7. a short table: best point per run, the simulated prediction beside it
#
# Usage (on the GPU machine, from the repository root; the device tool sets $OUT):
#   scripts/device-pipeline.sh
# Needs, carried in .device/ (built here; the GPU machine has no Rust):
#   .device/mica   stripped `cargo build --release --features torch` binary
#                  (strip -o .device/mica target-torch/release/mica)
#   .device/preprocess_rate   optional: `cargo build --release --example preprocess_rate`
#                  (strip -o .device/preprocess_rate target/release/examples/preprocess_rate);
#                  when present, one host core's pre-processing rate is printed first
# Environment: OUT (default out/device-pipeline), POINT_S (default 2), SERVE_S (HTTP bench
# seconds per batch size, default 8), REF_BATCHES (default 1,32,128), MICA_PIPE_BUDGET_S
# (default 420: steps that would start later are skipped and said so), PYTHON.
# Expected wall time: ~1 min export, ~1.5 min one-GPU tune (12 points), ~0.5 min serve
# + bench, ~0.5 min two-GPU tune (6 points): well under 8 minutes.
set -uo pipefail

# shellcheck source=scripts/device-common.sh
source "$(dirname "${BASH_SOURCE[0]}")/device-common.sh"
device_start device-pipeline "${MICA_PIPE_BUDGET_S:-420}"
point_s="${POINT_S:-2}"

step "environment"
if [[ ! -x "$bin" ]]; then
    echo "error: $bin is missing: build it and carry .device/ (see the header)" >&2
    exit 1
fi
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$out/gpu.txt"
gpus="$(nvidia-smi -L | grep -c '^GPU ')"
cores="$(nproc --all)"
echo "GPUs: $gpus, cores: $cores"
torch_dir="$("$python" -c 'import torch,os;print(os.path.dirname(torch.__file__))')"
"$python" -c 'import torch,torchvision;print("torch",torch.__version__,"torchvision",torchvision.__version__,"cuda",torch.version.cuda)' |
    tee "$out/torch.txt"
export LD_LIBRARY_PATH="$torch_dir/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export RUST_LOG="${RUST_LOG:-warn}"
"$bin" --version

step "export ResNet-50 in 18 blocks (random weights)"
mkdir -p models
if [[ ! -f models/resnet50_stages/manifest.json ]]; then
    # --fixtures: the tiny staged model is exported too; keep it out of the repository.
    "$python" -W ignore scripts/export_model.py --stages --out models --fixtures "$work/fixtures" 2>&1 |
        grep -v -i "warn" || true
fi
ls models/resnet50_stages | head -3
if [[ ! -f models/resnet50_stages/block_17.pt ]]; then
    echo "error: the export did not write models/resnet50_stages/block_17.pt" >&2
    exit 1
fi

configs=config/gpu-pipeline.toml
if [[ $gpus -ge 2 ]]; then configs="$configs,config/gpu2-pipeline.toml"; fi
step "mica experiment pipeline (SIMULATED, discrete-event model, H100 profiles)"
"$bin" experiment pipeline --configs "$configs" --out "$out/experiment" --no-progress 2>&1 | tail -n 20

tune() { # name config extra-args...
    local name=$1 config=$2
    shift 2
    if over_budget; then
        echo "skipped tune $name (time budget)"
        return
    fi
    local t0=$(date +%s)
    "$bin" tune --config "$config" --backend real --search exhaustive \
        --point-duration "${point_s}s" --out "$out/tune-$name" --no-progress "$@" \
        >"$out/tune-$name.txt" 2>"$out/tune-$name.err"
    echo "exit $? after $(($(date +%s) - t0)) s" | tee -a "$out/tune-$name.txt"
    cat "$out/tune-$name.txt"
    tail -n 5 "$out/tune-$name.err"
}

if [[ -x .device/preprocess_rate ]]; then
    step "pre-processing on one host core (the CPU stage's work per image)"
    .device/preprocess_rate 448 224 2 | tee "$out/preprocess-rate.txt"
fi

step "PyTorch reference, same call (whole ResNet-50, random weights, one process)"
# half_nchw is what the staged tensor_fp16 blocks compute; half_cl is PyTorch's best
# eager FP16 layout; eager_fp32_notf32 the FP32 baseline.
"$python" -W ignore scripts/torch_reference.py --batch-sizes "${REF_BATCHES:-1,32,128}" \
    --configs half_nchw,half_cl,eager_fp32_notf32 --seconds 1.0 --repeats 3 \
    --latency-iters 50 --out "$out/torch_reference.json" 2>&1 | tail -n 15

step "mica tune --backend real: one GPU (config/gpu-pipeline.toml)"
tune gpu config/gpu-pipeline.toml

step "mica serve on the best one-GPU point, driven over HTTP"
if [[ -f "$out/tune-gpu/best.toml" ]] && ! over_budget; then
    port=18700
    metrics_port=18702
    MICA__SERVER__PORT=$port MICA__METRICS__PORT=$metrics_port \
        "$bin" serve --config "$out/tune-gpu/best.toml" >"$out/serve.log" 2>&1 &
    serve_pid=$!
    for _ in $(seq 1 120); do
        curl -sf "http://127.0.0.1:$port/v2/health/ready" >/dev/null && break
        sleep 0.5
    done
    curl -s "http://127.0.0.1:$port/v2/models/resnet50-pipe"
    echo
    for batch in 1 16; do
        "$bin" bench --url "http://127.0.0.1:$port" --model resnet50-pipe --batch-size "$batch" \
            --concurrency 32 --duration "${SERVE_S:-8}s" --warmup 2s --json --no-progress \
            >"$out/serve-bench-b$batch.json" 2>"$out/serve-bench-b$batch.err"
        "$python" - "$out/serve-bench-b$batch.json" "$batch" <<'PY'
import json, sys
try:
    t = json.load(open(sys.argv[1]))["total"]
    print(f"  HTTP batch {sys.argv[2]:>3}, concurrency 32: {t['throughput_img_s']:9.1f} img/s  "
          f"p50 {t['p50_ms']:.2f} ms  p99 {t['p99_ms']:.2f} ms")
except Exception as e:
    print(f"  HTTP batch {sys.argv[2]}: FAILED ({e})")
PY
    done
    curl -s "http://127.0.0.1:$metrics_port/metrics" >"$out/serve-metrics.txt"
    grep -E '^mica_pipeline_stage_(images_total|service_seconds_sum)' "$out/serve-metrics.txt"
    kill -TERM "$serve_pid"
    wait "$serve_pid"
    echo "mica serve exited $?"
else
    echo "skipped (no best.toml, or time budget)"
fi

if [[ $gpus -ge 2 ]]; then
    step "mica tune --backend real: two GPUs (config/gpu2-pipeline.toml, 6 coarse blocks)"
    tune gpu2 config/gpu2-pipeline.toml --model-stages 6
    # The same space with every stage boundary through host memory: what the
    # device-to-device hand-off between the two GPUs' stages is worth.
    step "the same two-GPU tune, activations handed over through host memory"
    sed 's/^device_handoff = true$/device_handoff = false/' config/gpu2-pipeline.toml \
        >config/gpu2-pipeline-host.toml
    if grep -q '^device_handoff = false$' config/gpu2-pipeline-host.toml; then
        tune gpu2-host config/gpu2-pipeline-host.toml --model-stages 6
    else
        echo "error: config/gpu2-pipeline.toml has no 'device_handoff = true' line to flip" >&2
    fi
    rm -f config/gpu2-pipeline-host.toml
else
    step "one GPU only: no two-GPU run"
fi

step "summary (measured by mica tune --backend real unless marked SIMULATED)"
"$python" - "$out" <<'PY'
import json, pathlib, sys
out = pathlib.Path(sys.argv[1])
for name in ["gpu", "gpu2", "gpu2-host"]:
    path = out / f"tune-{name}" / "tune.json"
    if not path.exists():
        continue
    r = json.loads(path.read_text())
    b = r["best_config"]
    print(f"{name}: backend {r['backend']}, {r['evaluated']} points in {r['wall_time_s']:.0f} s")
    for e in r["top"][:6]:
        m = e.get("measured", e)
        print(f"  {e.get('key', e.get('point', '?')):<24} {m.get('throughput_img_s', 0):9.1f} img/s"
              f"  mean {m.get('latency_mean_ms', 0):8.2f} ms  GPU util {m.get('gpu_utilization', 0):.2f}")
    print(f"  best: {b['measured']['throughput_img_s']:.1f} img/s  {' -> '.join(b['stages'])}"
          f"  batch {b['batch']} streams {b['streams']} threads {b['threads']}")
sim = out / "experiment" / "pipeline.json"
if sim.exists():
    print("SIMULATED (experiment pipeline):")
    for row in json.loads(sim.read_text()):
        print(f"  {row['platform'][:28]:<28} {row['setup'][:40]:<40} {row['throughput_img_s']:9.1f} img/s")
PY
step "done in $(elapsed) s"
device_finish
