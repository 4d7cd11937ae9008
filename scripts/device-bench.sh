#!/usr/bin/env bash
# One device run of mica's real-hardware benchmark (issue 4), everything in ONE call so
# that mica's figures and PyTorch's come from the same machine and the same lease:
#
#   1. environment: nvidia-smi, the machine's torch; LD_LIBRARY_PATH=<torch>/lib
#   2. export ResNet-50 (random weights, seeded) with the machine's python3
#      (scripts/export_model.py --reference 8) into models/
#   3. numerical agreement, mica's torch engine vs PyTorch on identical weights and input
#      (the carried test binary of engines/tests/torch_resnet50.rs, every unit kind,
#      plain and fused exports)
#   4. the PyTorch reference (scripts/torch_reference.py)
#   5. `mica profile` of every unit -> config/profiles/h100/ (in the device's copy)
#   6. `mica bench` through the whole service path: each unit alone at batch 1..256,
#      batch-1 latency at concurrency 1, 1 vs 2 streams on tensor_fp16 at batch 64, and
#      cpu+cuda_fp32+tensor_fp16 / cuda_fp32+tensor_fp16 under every policy at 64 and 256
#   7. scripts/device_bench_report.py: results.json + summary.md (ratios mica / PyTorch,
#      the targets) under $OUT, profiles as profiles.tar
#
# Usage (on the GPU machine, from the repository root; the device tool sets $OUT):
#   scripts/device-bench.sh [full|quick]
# `quick` checks the set-up in about a minute (one bench, one profile, half_cl only).
# `large` re-runs the large-batch cells (64, 128, 256) with an 8 s unmeasured warm-up,
# the PyTorch reference beside them, and no profiling: at warmup_batches = 0 the first
# FP32 batch of 256 autotunes cuDNN for longer than the 2 s warm-up of `full`.
#
# Needs, carried in .device/ (built here; the GPU machine has no Rust):
#   .device/mica            stripped `cargo build --release --features torch` binary
#   .device/torch_resnet50  stripped test binary of engines/tests/torch_resnet50.rs
# Environment: OUT (default out/device-bench), MICA_BENCH_BUDGET_S (default 520: steps
# that would start later are skipped and reported as such), PYTHON (default python3).
set -uo pipefail

mode="${1:-full}"
case "$mode" in
full | quick | large) ;;
*)
    echo "usage: $0 [full|quick|large]" >&2
    exit 2
    ;;
esac

# shellcheck source=scripts/device-common.sh
source "$(dirname "${BASH_SOURCE[0]}")/device-common.sh"
device_start device-bench "${MICA_BENCH_BUDGET_S:-520}"
mkdir -p "$work/runs" config/profiles/h100
agreement_bin="$repo_root/.device/torch_resnet50"
config="config/gpu.toml"
seconds_since() { # start in ns (date +%s%N) -> seconds with 3 decimals
    local ns=$(($(date +%s%N) - $1))
    printf '%d.%03d' $((ns / 1000000000)) $((ns / 1000000 % 1000))
}

step "environment ($mode)"
for f in "$bin" "$agreement_bin"; do
    if [[ ! -x "$f" ]]; then
        echo "error: $f is missing: build it and carry .device/ (see the header)" >&2
        exit 1
    fi
done
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,power.limit \
    --format=csv,noheader | tee "$work/gpu.txt"
cores="$(nproc --all)"
echo "cores: $cores"
torch_dir="$("$python" -c 'import torch,os;print(os.path.dirname(torch.__file__))')"
"$python" -c 'import torch,torchvision;print("torch",torch.__version__,"torchvision",torchvision.__version__,"cuda",torch.version.cuda,"cudnn",torch.backends.cudnn.version())' |
    tee "$work/torch.txt"
export LD_LIBRARY_PATH="$torch_dir/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
# The CPU unit's intra-op threads: leave cores for the dispatcher and the GPU units'
# stream workers, which launch kernels from the CPU.
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-$((cores > 8 ? cores - 4 : 4))}"
export RUST_LOG="${RUST_LOG:-warn}"
echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH OMP_NUM_THREADS=$OMP_NUM_THREADS"
"$bin" --version
gpu_name="$(head -n1 "$work/gpu.txt" | cut -d, -f1 | xargs)"
machine="$gpu_name ($(head -n1 "$work/gpu.txt" | cut -d, -f2 | xargs) driver), $(cat "$work/torch.txt"), $cores cores"

step "export ResNet-50 (random weights)"
mkdir -p models
if [[ ! -f models/resnet50_fp16.pt || ! -f models/resnet50.json ]]; then
    "$python" -W ignore scripts/export_model.py --out models --reference 8 2>&1 |
        grep -v -i "warn\|visitor\|torch.onnx.export(" || true
fi
ls -la models

if [[ $mode != large ]]; then
    step "numerical agreement (mica torch engine vs PyTorch)"
    MICA_TORCH_MODELS="$repo_root/models" MICA_TORCH_TEST_CUDA=1 \
        "$agreement_bin" --ignored --nocapture --test-threads 1 >"$work/agreement.txt" 2>&1
    echo "exit $?" >>"$work/agreement.txt"
    grep -E "agreement|test result|panicked|exit" "$work/agreement.txt"
fi

ref_configs=all
ref_sizes=1,8,32,64,128,256
if [[ $mode == quick ]]; then
    ref_configs=half_cl,script_half_cl
    ref_sizes=1,256
elif [[ $mode == large ]]; then
    ref_configs=eager_fp32_notf32,eager_fp32_tf32,autocast_fp16,half_cl,half_cl_graph,script_half_cl,script_fp32_notf32
    ref_sizes=64,128,256
fi
step "PyTorch reference ($ref_configs)"
"$python" scripts/torch_reference.py --batch-sizes "$ref_sizes" --configs "$ref_configs" --seconds 0.2 \
    --models models --out "$work/torch_reference.json"

# Profiles first: the bench config's policies read them. A copy of the config without
# `profile =` lines loads before any profile exists.
step "mica profile"
# Bench and profile runs skip the engines' load-time warm-up (warmup_batches = 0): it
# autotunes cuDNN for every power-of-two batch size up to max_batch (~1.5 s each), while
# a fixed-batch run uses one size, autotuned by its first batches inside `mica bench`'s
# own unmeasured warm-up (and `mica profile`'s per-size warm-up batches).
sed -E -e 's/^(engine = \{ type = "torch".*), warmup_batches = [0-9]+/\1/' \
    -e 's/^engine = \{ type = "torch"/engine = { type = "torch", warmup_batches = 0/' \
    "$config" >config/gpu-bench.toml
sed -E '/^profile *=/d' config/gpu-bench.toml >config/gpu-unprofiled.toml
config=config/gpu-bench.toml
profile() { # name units sizes batches warmup max_s
    local name=$1
    local cmd=("$bin" profile --config config/gpu-unprofiled.toml --units "$2"
        --batch-sizes "$3" --batches "$4" --warmup-batches "$5" --max-seconds-per-size "$6"
        --out-dir config/profiles/h100 --machine "$machine" --json)
    if over_budget; then
        echo "skipped profile $name (time budget)"
        return
    fi
    typed "${cmd[@]}" >"$work/runs/profile-$name.cmd"
    local t0=$(date +%s%N)
    "${cmd[@]}" >"$work/runs/profile-$name.json" 2>"$work/runs/profile-$name.err"
    local rc=$?
    echo "$rc $(seconds_since "$t0")" >"$work/runs/profile-$name.rc"
    grep -E "batch|error" "$work/runs/profile-$name.err" | sed 's/^/  /'
}
if [[ $mode == quick ]]; then
    profile gpu tensor_fp16 1,256 10 3 5
elif [[ $mode == large ]]; then
    echo "no profiling in this mode: the committed profiles (config/profiles/h100/) are used"
else
    profile gpu cuda_fp32,tensor_fp16,amp,tensor_bf16 1,8,32,64,128,256 20 5 5
    profile tf32 cuda_tf32 1,8,32,64,128,256 20 5 5
    profile cpu cpu 1,8,32 8 2 3
fi
if [[ $mode != large ]]; then
    (cd config/profiles/h100 && tar cf "$out/profiles.tar" ./*.toml 2>/dev/null) || true
fi

bench() { # name units batch concurrency policy duration_s warmup_s
    local name=$1 units=$2 batch=$3 conc=$4 policy=$5 dur=$6 warm=$7
    if over_budget; then
        echo "skipped $name (time budget)"
        return
    fi
    local cmd=("$bin" bench --config "$config" --units "$units" --batch-size "$batch"
        --concurrency "$conc" --policy "$policy" --duration "${dur}s" --warmup "${warm}s"
        --json --no-progress)
    typed "${cmd[@]}" >"$work/runs/$name.cmd"
    local t0=$(date +%s%N)
    "${cmd[@]}" >"$work/runs/$name.json" 2>"$work/runs/$name.err"
    local rc=$?
    local wall=$(seconds_since "$t0")
    echo "$rc $wall" >"$work/runs/$name.rc"
    "$python" - "$work/runs/$name.json" "$name" "$rc" "$wall" <<'PY'
import json, sys
path, name, rc, wall = sys.argv[1:]
try:
    r = json.load(open(path))
    t = r["total"]
    units = " ".join(f"{u}={s['throughput_img_s']:.0f}" for u, s in r["units"].items())
    print(f"  {name:<34} {t['throughput_img_s']:9.1f} img/s  p50 {t['p50_ms']:8.3f} ms  "
          f"failed {r['failed_requests']}  [{units}]  ({float(wall):.1f}s)")
except Exception as e:
    print(f"  {name:<34} FAILED rc={rc} ({e}); see {path[:-5]}.err")
PY
    if [[ $rc -ne 0 ]]; then tail -n 5 "$work/runs/$name.err" | sed 's/^/    /'; fi
}

sizes=(1 8 32 64 128 256)
dur=2
warm=2
if [[ $mode == quick ]]; then
    step "mica bench (quick)"
    # Only tensor_fp16 was profiled: run on the config without profiles.
    config=config/gpu-unprofiled.toml
    bench single-tensor_fp16-b64 tensor_fp16 64 8 round_robin 2 2
    bench single-tensor_fp16-b256 tensor_fp16 256 8 round_robin 2 2
    bench latency-tensor_fp16-b1 tensor_fp16 1 1 round_robin 2 2
elif [[ $mode == large ]]; then
    step "mica bench: large batches alone (8 s warm-up)"
    for unit in cuda_fp32 tensor_fp16 amp cuda_tf32; do
        for b in 64 128 256; do
            bench "single-$unit-b$b" "$unit" "$b" 8 round_robin 2 8
        done
    done
    bench single-tensor_fp16_1s-b64 tensor_fp16_1s 64 4 round_robin 2 8
    step "mica bench: combinations under each policy (8 s warm-up)"
    for combo in cuda_fp32,tensor_fp16 cpu,cuda_fp32,tensor_fp16; do
        for b in 64 256; do
            for policy in round_robin least_loaded contention_aware adaptive; do
                bench "combo-${combo//,/+}-b$b-$policy" "$combo" "$b" 12 "$policy" 3 8
            done
        done
    done
else
    step "mica bench: tensor_fp16 and cuda_fp32 alone"
    for unit in tensor_fp16 cuda_fp32; do
        for b in "${sizes[@]}"; do
            bench "single-$unit-b$b" "$unit" "$b" 8 round_robin $dur $warm
        done
    done
    step "mica bench: batch-1 latency (concurrency 1), streams"
    for unit in tensor_fp16 cuda_fp32 amp; do
        bench "latency-$unit-b1" "$unit" 1 1 round_robin $dur $warm
    done
    bench single-tensor_fp16_1s-b64 tensor_fp16_1s 64 4 round_robin $dur $warm
    bench single-tensor_fp16_1s-b256 tensor_fp16_1s 256 4 round_robin $dur $warm

    step "mica bench: combinations under each policy"
    for combo in cuda_fp32,tensor_fp16 cpu,cuda_fp32,tensor_fp16; do
        for b in 64 256; do
            for policy in round_robin least_loaded contention_aware adaptive; do
                bench "combo-${combo//,/+}-b$b-$policy" "$combo" "$b" 12 "$policy" 3 2
            done
        done
    done

    step "mica bench: amp, cuda_tf32, cpu alone"
    for unit in amp cuda_tf32; do
        for b in "${sizes[@]}"; do
            bench "single-$unit-b$b" "$unit" "$b" 8 round_robin $dur $warm
        done
    done
    for b in 1 8; do
        bench "single-cpu-b$b" cpu "$b" 2 round_robin 3 2
    done
fi

step "report"
"$python" scripts/device_bench_report.py --work "$work" --out "$out" --mode "$mode" \
    --elapsed "$(elapsed)"
step "done in $(elapsed) s"
device_finish
