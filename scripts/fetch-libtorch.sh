#!/usr/bin/env bash
# Fetches libtorch 2.11.0 (the version tch 0.24 binds) without a GPU: downloads the
# PyPI wheel torch==2.11.0 (cu130 build, manylinux x86_64, ~530 MB) and keeps only
# torch/lib, torch/include and torch/share. The wheel's libtorch_cpu.so needs
# libcudart.so.13 and libcupti.so.13 even on a CPU-only host, so the two small NVIDIA
# wheels that carry them are unpacked beside it, at the place the libraries' RPATH
# ($ORIGIN/../../nvidia/cu13/lib) already looks. The other CUDA libraries (cuBLAS,
# cuDNN, ...) are not fetched: CPU tests never load libtorch_cuda.so, and a GPU host has
# them from its own PyTorch install.
#
# The CUDA runtime headers (cuda_runtime_api.h, cuda.h, crt/*.h: ~1 MB, from the
# nvidia-cuda-runtime and nvidia-cuda-crt wheels) are unpacked into nvidia/cu13/include,
# in a step of their own (own marker, so an existing cache gains them): libtorch's CUDA
# headers (ATen/cuda/CUDAGraph.h) include them, and the torch feature compiles its CUDA
# graph library against them (engines/build.rs).
#
# Usage: scripts/fetch-libtorch.sh [CACHE_DIR]
#   CACHE_DIR defaults to $MICA_LIBTORCH_CACHE, else <repo>/.cache/libtorch.
#   MICA_KEEP_WHEEL=1 keeps the downloaded wheel (for `pip install` of the same build).
# Idempotent: does nothing when the extraction is already complete.
# Last lines printed: the `export` lines to build with `--features torch`.
set -euo pipefail

readonly TORCH_VERSION="2.11.0"
readonly PY_VERSION="3.12"
readonly CUDART_VERSION="13.0.96"
readonly CUPTI_VERSION="13.0.85"
readonly CRT_VERSION="13.0.88"

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cache_dir="${1:-${MICA_LIBTORCH_CACHE:-$repo_root/.cache/libtorch}}"
mkdir -p "$cache_dir"
cache_dir="$(cd "$cache_dir" && pwd)"
dest="$cache_dir/$TORCH_VERSION"
libtorch="$dest/torch"
marker="$dest/.complete"

log() { printf '[fetch-libtorch] %s\n' "$*" >&2; }

pick_python() {
    local candidate
    for candidate in python3 python; do
        if command -v "$candidate" >/dev/null 2>&1; then
            echo "$candidate"
            return 0
        fi
    done
    log "error: no python3 found (needed for pip and to unpack the wheel)"
    exit 1
}

if [[ -f "$marker" ]]; then
    log "libtorch $TORCH_VERSION already present in $libtorch (skipping download)"
else
    python="$(pick_python)"
    wheel_dir="$cache_dir/wheel"
    mkdir -p "$wheel_dir"
    wheel="$(ls "$wheel_dir"/torch-"$TORCH_VERSION"-cp3*-manylinux*_x86_64.whl 2>/dev/null | head -n1 || true)"
    if [[ -z "$wheel" ]]; then
        log "downloading torch==$TORCH_VERSION (cp${PY_VERSION/./}, manylinux x86_64, ~530 MB) into $wheel_dir"
        "$python" -m pip download --no-deps --only-binary=:all: \
            --python-version "$PY_VERSION" \
            --platform manylinux_2_28_x86_64 \
            --dest "$wheel_dir" "torch==$TORCH_VERSION" >&2
        wheel="$(ls "$wheel_dir"/torch-"$TORCH_VERSION"-cp3*-manylinux*_x86_64.whl | head -n1)"
    else
        log "reusing downloaded wheel $wheel"
    fi
    log "downloading libcudart $CUDART_VERSION and libcupti $CUPTI_VERSION (needed by libtorch_cpu.so)"
    "$python" -m pip download --no-deps --only-binary=:all: \
        --python-version "$PY_VERSION" \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_25_x86_64 \
        --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        --dest "$wheel_dir" \
        "nvidia-cuda-runtime==$CUDART_VERSION" "nvidia-cuda-cupti==$CUPTI_VERSION" >&2

    staging="$cache_dir/.staging-$$"
    rm -rf "$staging"
    mkdir -p "$staging"
    trap 'rm -rf "$staging"' EXIT
    log "extracting torch/lib, torch/include, torch/share and nvidia/cu13/lib into $dest"
    "$python" - "$staging" "$wheel" "$wheel_dir"/nvidia_cuda_runtime-"$CUDART_VERSION"-*.whl \
        "$wheel_dir"/nvidia_cuda_cupti-"$CUPTI_VERSION"-*.whl <<'PY'
import os
import sys
import zipfile

staging, wheels = sys.argv[1], sys.argv[2:]
keep = ("torch/lib/", "torch/include/", "torch/share/", "torch/version.py",
        "nvidia/cu13/lib/libcudart.so", "nvidia/cu13/lib/libcupti.so")
count = 0
for wheel in wheels:
    with zipfile.ZipFile(wheel) as archive:
        for info in archive.infolist():
            if info.is_dir() or not info.filename.startswith(keep):
                continue
            target = os.path.join(staging, info.filename)
            os.makedirs(os.path.dirname(target), exist_ok=True)
            with archive.open(info) as src, open(target, "wb") as dst:
                while chunk := src.read(1 << 20):
                    dst.write(chunk)
            mode = (info.external_attr >> 16) & 0o777
            if mode:
                os.chmod(target, mode)
            count += 1
print(f"[fetch-libtorch] extracted {count} files", file=sys.stderr)
PY
    # tch's build script checks this file against the version it binds.
    printf '%s\n' "$TORCH_VERSION" >"$staging/torch/build-version"
    for lib in libtorch_cpu.so libtorch_cuda.so libc10.so; do
        if [[ ! -f "$staging/torch/lib/$lib" ]]; then
            log "error: $lib missing from the wheel"
            exit 1
        fi
    done
    rm -rf "$dest"
    mv "$staging" "$dest"
    trap - EXIT
    touch "$marker"
    if [[ "${MICA_KEEP_WHEEL:-0}" != "1" ]]; then
        log "removing the downloaded wheels (set MICA_KEEP_WHEEL=1 to keep them)"
        rm -rf "$wheel_dir"
    fi
    log "libtorch $TORCH_VERSION ready in $libtorch"
fi

headers_marker="$dest/.cuda-headers-$CUDART_VERSION"
if [[ ! -f "$headers_marker" ]]; then
    python="$(pick_python)"
    headers_wheels="$cache_dir/.headers-wheels-$$"
    headers_staging="$cache_dir/.headers-staging-$$"
    rm -rf "$headers_wheels" "$headers_staging"
    mkdir -p "$headers_wheels" "$headers_staging"
    trap 'rm -rf "$headers_wheels" "$headers_staging"' EXIT
    log "downloading the CUDA runtime headers (nvidia-cuda-runtime $CUDART_VERSION, nvidia-cuda-crt $CRT_VERSION)"
    "$python" -m pip download --no-deps --only-binary=:all: \
        --python-version "$PY_VERSION" \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_25_x86_64 \
        --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        --dest "$headers_wheels" \
        "nvidia-cuda-runtime==$CUDART_VERSION" "nvidia-cuda-crt==$CRT_VERSION" >&2
    "$python" - "$headers_staging" "$headers_wheels"/*.whl <<'PY'
import os
import sys
import zipfile

staging, wheels = sys.argv[1], sys.argv[2:]
count = 0
for wheel in wheels:
    with zipfile.ZipFile(wheel) as archive:
        for info in archive.infolist():
            if info.is_dir() or not info.filename.startswith("nvidia/cu13/include/"):
                continue
            target = os.path.join(staging, info.filename[len("nvidia/cu13/"):])
            os.makedirs(os.path.dirname(target), exist_ok=True)
            with archive.open(info) as src, open(target, "wb") as dst:
                dst.write(src.read())
            count += 1
print(f"[fetch-libtorch] extracted {count} CUDA header files", file=sys.stderr)
PY
    for header in cuda_runtime_api.h cuda.h crt/host_config.h; do
        if [[ ! -f "$headers_staging/include/$header" ]]; then
            log "error: $header missing from the NVIDIA wheels"
            exit 1
        fi
    done
    mkdir -p "$dest/nvidia/cu13"
    rm -rf "$dest/nvidia/cu13/include"
    mv "$headers_staging/include" "$dest/nvidia/cu13/include"
    rm -rf "$headers_wheels" "$headers_staging"
    trap - EXIT
    touch "$headers_marker"
    log "CUDA runtime headers ready in $dest/nvidia/cu13/include"
fi

echo "export LIBTORCH=$libtorch"
echo "export LIBTORCH_CXX11_ABI=1"
echo "export LD_LIBRARY_PATH=$libtorch/lib:$dest/nvidia/cu13/lib\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}"
