#!/usr/bin/env bash
# One device run of issue 17 (CUDA graphs and AOTInductor packages in the torch engine),
# everything in ONE call so that mica's figures and PyTorch's come from the same machine
# and the same lease:
#
#   1. environment; export ResNet-50 (random weights, seeded): TorchScript FP32 (for the
#      FP32 reference output) and FP16 (the half channels-last wrapper tensor_fp16 runs)
#   2. agreement: the carried test binary of engines/tests/torch_resnet50.rs, every GPU
#      unit kind plain and replayed from CUDA graphs (full and partial batch)
#   3. PyTorch reference (torch_reference.py): half_cl eager, half_cl_graph (CUDA-graph
#      replay) and script_half_cl at 1, 8, 32, 64, 256, batch-1 p50
#   4. mica bench, tensor_fp16 with cuda_graphs = true (and without, for the before
#      figure) at 1, 8, 32, 64; batch-1 p50 at concurrency 1; one-image requests at
#      concurrency 256 (dynamic batching) vs fixed batch 256 (part c256: only these)
#   5. (compiled) no CPU fixture: a package runs only beside the libraries it was
#      compiled against (docs/NOTES.md)
#   6. a dynamic-batch package (1..256, default mode): mica bench at 64 and 256 (no
#      CUDA graphs: a package's run fails inside a stream capture, a load error)
#   7. PyTorch references at 64 and 256: eager, graph replay, torch.compile default and
#      max-autotune-no-cudagraphs
#   8. per-size packages (FP16, 64 and 256, max-autotune; FP32 input or, with
#      MICA_PACKAGE_INPUTS=cl, FP16 channels-last input) as time allows; agreement of
#      every package
#   9. device_graphs_report.py: results.json + summary.md under $OUT (table printed last)
# Steps that would start after the time budget are skipped and reported as such; `part`
# selects steps for a second call (all | graphs | c256 | compiled, or one part of
# compiled: packages | compile-reference | per-size).
#
# Usage (on the GPU machine, from the repository root, the scripts carried in
# .device-run/ with the binaries):
#   bash .device-run/device-graphs.sh [all|graphs|c256|compiled|packages|compile-reference|per-size]
#   (or several parts, comma-separated: c256,packages)
# Needs in .device-run/: mica (stripped release binary, --features torch),
# torch_resnet50 (stripped test binary), export_model.py, torch_reference.py,
# device_graphs_report.py, device-common.sh, this script.
# Environment: OUT, MICA_GRAPHS_BUDGET_S (default 470), PYTHON; MICA_COMPILE_REFERENCE_S
# (time limit of the torch.compile references, default 240) and
# MICA_COMPILE_REFERENCE_CONFIGS (default: all four) and MICA_COMPILE_REFERENCE_BATCHES
# (default 64,256), MICA_REFERENCE_SECONDS and
# MICA_REFERENCE_REPEATS (each timing's length, default 0.2 s, and how many, default 2:
# the median is reported); MICA_PACKAGE_BATCHES (default
# "64 256"), MICA_PACKAGE_MODE (default max-autotune), MICA_PACKAGE_INPUTS (fp32, cl or
# both, default fp32) and MICA_PACKAGE_EXPORT_S (each export's time limit, default 240)
# for the per-size packages; MICA_PACKAGE_STREAMS (every package unit's streams, default
# 2).
set -uo pipefail

part="${1:-all}"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=scripts/device-common.sh
source "$here/device-common.sh"
device_start device-graphs "${MICA_GRAPHS_BUDGET_S:-470}"
# device-common.sh takes the repository root to be the folder above this script's.
# Binaries beside this script when carried (.device-run/), else in .device/.
bin="$here/mica"
agreement_bin="$here/torch_resnet50"
if [[ ! -x $bin ]]; then bin="$repo_root/.device/mica"; fi
if [[ ! -x $agreement_bin ]]; then agreement_bin="$repo_root/.device/torch_resnet50"; fi
mkdir -p "$work/runs" "$out/runs" models config
seconds_since() { # start in ns (date +%s%N) -> seconds with 3 decimals
    local ns=$(($(date +%s%N) - $1))
    printf '%d.%03d' $((ns / 1000000000)) $((ns / 1000000 % 1000))
}
want() { # any of the part names given (all: every part; PART may be a comma list)
    local name given
    [[ $part == all ]] && return 0
    for given in ${part//,/ }; do
        for name; do [[ $given == "$name" ]] && return 0; done
    done
    return 1
}
gated() { # name: false (and a note) once over budget
    if over_budget; then
        echo "skipped $1 (time budget, $(elapsed) s)" | tee -a "$out/skipped.txt"
        return 1
    fi
}

step "environment (part $part)"
for f in "$bin" "$agreement_bin"; do
    if [[ ! -x "$f" ]]; then
        echo "error: $f is missing: build it and carry .device-run/" >&2
        exit 1
    fi
done
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,power.limit \
    --format=csv,noheader | tee "$out/gpu.txt"
cores="$(nproc --all)"
torch_dir="$("$python" -c 'import torch,os;print(os.path.dirname(torch.__file__))')"
"$python" -c 'import torch,torchvision;print("torch",torch.__version__,"torchvision",torchvision.__version__,"cuda",torch.version.cuda,"cudnn",torch.backends.cudnn.version())' |
    tee "$out/torch.txt"
export LD_LIBRARY_PATH="$torch_dir/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export RUST_LOG="${RUST_LOG:-warn,mica_engines::torch=info}"
# Kept between calls on one machine (an ignored path): a later call's torch.compile
# and package exports find what an earlier one compiled and autotuned.
export TORCHINDUCTOR_CACHE_DIR="$repo_root/.device-cache/inductor"
echo "cores: $cores  LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
"$bin" --version

step "export ResNet-50 TorchScript (FP32 + reference, FP16 wrapper)"
"$python" -W ignore - "$here" <<'PY'
import pathlib, sys
sys.path.insert(0, sys.argv[1])
import torch, torchvision
import export_model as e

torch.set_grad_enabled(False)
out = pathlib.Path("models")
torch.manual_seed(e.SEED)
model = torchvision.models.resnet50(weights=None).eval()
fp32 = e.save_script(model, out / "resnet50_fp32.pt")
e.save_script(e.Fp16ChannelsLast(e.copy_model(model)), out / "resnet50_fp16.pt")
generator = torch.Generator().manual_seed(e.SEED)
inputs = torch.randn(8, 3, 224, 224, generator=generator)
e.write_reference(out, "resnet50", "resnet50_fp32.pt", fp32, inputs, {"classes": 1000})
PY

# The units: tensor_fp16 with and without graphs; packages added by step 6.
write_config() { # extra units appended from $work/extra-units.toml
    cat >config/device-graphs.toml <<'TOML'
[platform]
name = "device tool GPU (torch engine, issue 17)"

[scheduler]
policy = { type = "round_robin" }
max_queue_delay_us = 1000
queue_capacity = 8192
priority_levels = 2
seed = 42

[model]
name = "resnet50"
input_shape = [3, 224, 224]
output_shape = [1000]
max_batch = 256

[server]
address = "127.0.0.1"
port = 8000

[metrics]
address = "127.0.0.1"
port = 8002

[[units]]
id = "tensor_fp16"
kind = "tensor_fp16"
device = 0
streams = 2
max_batch = 256
engine = { type = "torch", model = "../models/resnet50_fp16.pt", warmup_batches = 2 }

[[units]]
id = "tensor_fp16_graphs"
kind = "tensor_fp16"
device = 0
streams = 2
max_batch = 256
engine = { type = "torch", model = "../models/resnet50_fp16.pt", cuda_graphs = true, warmup_batches = 2 }

[[units]]
id = "tensor_fp16_graphs_stagger"
kind = "tensor_fp16"
device = 0
streams = 2
max_batch = 256
stagger_min_images = 192
engine = { type = "torch", model = "../models/resnet50_fp16.pt", cuda_graphs = true, warmup_batches = 2 }
TOML
    if [[ -f "$work/extra-units.toml" ]]; then cat "$work/extra-units.toml" >>config/device-graphs.toml; fi
}
write_config
config=config/device-graphs.toml

bench() { # name units batch(- for one-image requests) concurrency duration_s warmup_s
    local name=$1 units=$2 batch=$3 conc=$4 dur=$5 warm=$6
    gated "bench $name" || return 0
    local cmd=("$bin" bench --config "$config" --units "$units" --concurrency "$conc"
        --duration "${dur}s" --warmup "${warm}s" --json --no-progress)
    if [[ $batch != - ]]; then cmd+=(--batch-size "$batch"); fi
    typed "${cmd[@]}" >"$out/runs/$name.cmd"
    local t0=$(date +%s%N)
    "${cmd[@]}" >"$out/runs/$name.json" 2>"$out/runs/$name.err" &
    local pid=$! watcher=
    if [[ -n ${WATCH_PACKAGE_LOAD_S:-} ]]; then
        # A package that has not loaded after this long: every thread's stack (cuda-gdb,
        # the machine has no gdb) into runs/NAME.stacks, then the bench is stopped.
        (
            sleep "$WATCH_PACKAGE_LOAD_S"
            if kill -0 "$pid" 2>/dev/null && ! grep -q "aotinductor package loaded" "$out/runs/$name.err"; then
                echo "  no package loaded after $WATCH_PACKAGE_LOAD_S s: stacks in runs/$name.stacks"
                timeout 90 cuda-gdb -batch -ex "info threads" -ex "thread apply all bt 30" \
                    -p "$pid" >"$out/runs/$name.stacks" 2>&1
                kill "$pid" 2>/dev/null
            fi
        ) &
        watcher=$!
    fi
    wait "$pid"
    local rc=$?
    if [[ -n $watcher ]]; then
        # Its sleep too: left running, it holds the log's pipe open past the script's end.
        pkill -P "$watcher" 2>/dev/null
        kill "$watcher" 2>/dev/null
        wait "$watcher" 2>/dev/null
    fi
    local wall=$(seconds_since "$t0")
    echo "$rc $wall" >"$out/runs/$name.rc"
    "$python" - "$out/runs/$name.json" "$name" "$rc" "$wall" <<'PY'
import json, sys
path, name, rc, wall = sys.argv[1:]
try:
    r = json.load(open(path))
    t = r["total"]
    print(f"  {name:<36} {t['throughput_img_s']:9.1f} img/s  p50 {t['p50_ms']:8.3f} ms  "
          f"failed {r['failed_requests']}  ({float(wall):.1f}s)")
except Exception as e:
    print(f"  {name:<36} FAILED rc={rc} ({e}); see {path[:-5]}.err")
PY
    if [[ $rc -ne 0 ]]; then tail -n 5 "$out/runs/$name.err" | sed 's/^/    /'; fi
    grep -h "captured cuda graph\|cuda graphs captured" "$out/runs/$name.err" | head -n 3 | sed 's/^/    /'
}

agreement() { # name, env assignments...
    local name=$1
    shift
    gated "agreement $name" || return 0
    env MICA_TORCH_MODELS="$repo_root/models" "$@" \
        "$agreement_bin" --ignored --nocapture --test-threads 1 >"$out/agreement-$name.txt" 2>&1
    echo "exit $?" >>"$out/agreement-$name.txt"
    grep -E "^agreement|^graph memory|test result|panicked|^exit" "$out/agreement-$name.txt"
}

if want graphs; then
    step "agreement: every GPU unit kind, plain and with CUDA graphs"
    agreement graphs MICA_TORCH_TEST_CUDA=1

    step "PyTorch reference: eager, CUDA-graph replay, TorchScript (1..256)"
    gated "reference-graphs" &&
        "$python" -W ignore "$here/torch_reference.py" --batch-sizes 1,8,32,64,256 \
            --configs half_cl,half_cl_graph,script_half_cl --seconds 0.2 --models models \
            --out "$out/reference-graphs.json" 2>&1 | tail -n 5

    step "mica bench: tensor_fp16 with CUDA graphs"
    for b in 1 8 32 64; do
        bench "graphs-b$b" tensor_fp16_graphs "$b" 8 2 1
    done
    bench graphs-latency-b1 tensor_fp16_graphs 1 1 2 1

    step "mica bench: one-image requests at concurrency 256 vs fixed batch 256"
    bench graphs-b256 tensor_fp16_graphs 256 8 2 1
    bench graphs-dynamic-c256 tensor_fp16_graphs - 256 3 1
    bench graphs-stagger-c256 tensor_fp16_graphs_stagger - 256 3 1

    step "mica bench: tensor_fp16 without graphs (the before figures)"
    bench plain-b1 tensor_fp16 1 8 2 1
    bench plain-latency-b1 tensor_fp16 1 1 2 1
    bench plain-b8 tensor_fp16 8 8 2 1
fi

if want c256; then
    step "mica bench: one-image requests at concurrency 256 vs fixed batch 256"
    bench graphs-b256 tensor_fp16_graphs 256 8 2 1
    bench graphs-dynamic-c256 tensor_fp16_graphs - 256 3 1
    # The same unit with stagger_min_images = 192: an idle unit's batch of 256 goes as
    # two shares of 128, the second half a share's run time after the first.
    bench graphs-stagger-c256 tensor_fp16_graphs_stagger - 256 3 1
    bench graphs-stagger-b256 tensor_fp16_graphs_stagger 256 8 2 1
fi

loaded() { # bench name: whether its package loaded (else its other benches are skipped)
    if grep -q "aotinductor package loaded" "$out/runs/$1.err" 2>/dev/null; then return 0; fi
    echo "skipped the other benches of $1's package: it did not load" | tee -a "$out/skipped.txt"
    return 1
}

package_units() { # id file max_batch -> a unit running the package (no CUDA graphs)
    cat >>"$work/extra-units.toml" <<TOML

[[units]]
id = "$1"
kind = "tensor_fp16"
device = 0
streams = ${MICA_PACKAGE_STREAMS:-2}
max_batch = $3
engine = { type = "torch", model = "../models/$2", warmup_batches = 2 }
TOML
    write_config
}

# compiled = packages + compile-reference + per-size, in that order: one dynamic-batch
# package (one compilation serves 64 and 256) first, then PyTorch's references, the
# per-size max-autotune packages last, as time allows. (No CPU fixture for CI: a
# package is the exporting machine's library, docs/NOTES.md.)
packages=()
if want compiled packages; then
    step "a dynamic-batch package (1..256, default mode)"
    if gated "aoti-dyn256"; then
        t0=$(date +%s%N)
        if [[ -f models/resnet50_fp16_cuda_dyn256.pt2 ]]; then
            # models/ is ignored, so an earlier call on this machine left it.
            echo "  reusing models/resnet50_fp16_cuda_dyn256.pt2 from an earlier call on this machine" |
                tee -a "$out/reused.txt"
        else
            timeout 200 "$python" -W ignore "$here/export_model.py" --out models \
                --aoti "fp16:cuda:dyn256" 2>&1 | grep -E "wrote|Error|error" | tail -n 3
            echo "  export took $(seconds_since "$t0") s"
        fi
        if [[ -f models/resnet50_fp16_cuda_dyn256.pt2 ]]; then
            package_units aot_dyn resnet50_fp16_cuda_dyn256.pt2 256
            WATCH_PACKAGE_LOAD_S=120 bench aot-dyn-b64 aot_dyn 64 8 2 1
            if loaded aot-dyn-b64; then
                packages+=("tensor_fp16:resnet50_fp16_cuda_dyn256.pt2")
                bench aot-dyn-b256 aot_dyn 256 8 2 1
            fi
        fi
    fi
fi

if want compiled compile-reference; then
    step "PyTorch reference: eager, graph replay, torch.compile default and max-autotune-no-cudagraphs (64, 256)"
    gated "reference-compile" &&
        timeout "${MICA_COMPILE_REFERENCE_S:-240}" "$python" -W ignore "$here/torch_reference.py" \
            --batch-sizes "${MICA_COMPILE_REFERENCE_BATCHES:-64,256}" \
            --configs "${MICA_COMPILE_REFERENCE_CONFIGS:-half_cl,half_cl_graph,half_cl_compile,half_cl_compile_mat}" \
            --seconds "${MICA_REFERENCE_SECONDS:-0.2}" --repeats "${MICA_REFERENCE_REPEATS:-2}" \
            --latency-iters 10 --out "$out/reference-compile.json" 2>&1 | grep -v Warning | tail -n 6
fi

if want compiled per-size; then
    mode="${MICA_PACKAGE_MODE:-max-autotune}"
    suffix="" && [[ $mode != default ]] && suffix="_${mode//-/}"
    step "AOTInductor packages per batch size: FP16, ${MICA_PACKAGE_BATCHES:-64 256}, $mode, input ${MICA_PACKAGE_INPUTS:-fp32}"
    for b in ${MICA_PACKAGE_BATCHES:-64 256}; do
        # fp32: FP32 NCHW in, converted inside; cl: FP16 channels-last in (the form
        # PyTorch's references are fed), which mica's synthetic input is made in.
        for input in ${MICA_PACKAGE_INPUTS:-fp32}; do
            tag="b$b" && [[ $input == cl ]] && tag="b${b}_cl"
            gated "aoti-$tag" || continue
            t0=$(date +%s%N)
            file="resnet50_fp16_cuda_b${b}${suffix}"
            [[ $input == cl ]] && file+="_cl"
            file+=".pt2"
            if [[ -f "models/$file" ]]; then
                echo "  reusing models/$file from an earlier call on this machine" | tee -a "$out/reused.txt"
            else
                timeout "${MICA_PACKAGE_EXPORT_S:-240}" "$python" -W ignore "$here/export_model.py" \
                    --out models --aoti "fp16:cuda:$b:$mode:$input" 2>&1 |
                    grep -E "wrote|Error|error" | tail -n 3
                echo "  export took $(seconds_since "$t0") s"
            fi
            if [[ -f "models/$file" ]]; then
                package_units "aot_$tag" "$file" "$b"
                WATCH_PACKAGE_LOAD_S=120 bench "aot-$tag" "aot_$tag" "$b" 8 2 1
                # A package of one batch size needs an engine whose max_batch holds it.
                if loaded "aot-$tag"; then packages+=("tensor_fp16:$file:$b"); fi
            fi
        done
    done
fi

if [[ ${#packages[@]} -gt 0 ]]; then
    step "agreement: the packages"
    agreement packages MICA_TORCH_TEST_CUDA=0 \
        MICA_TORCH_TEST_PACKAGES="$(IFS=,; echo "${packages[*]}")"
fi

cp config/device-graphs.toml "$out/" 2>/dev/null || true
step "report"
"$python" "$here/device_graphs_report.py" --out "$out" --elapsed "$(elapsed)"
step "done in $(elapsed) s"
device_finish
