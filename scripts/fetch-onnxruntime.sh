#!/usr/bin/env bash
# Fetches ONNX Runtime 1.31.1's shared library (CPU execution provider only) without
# building anything: downloads the pinned PyPI wheel onnxruntime==1.31.1 (cp311,
# manylinux_2_28 x86_64, 23.8 MB), checks its sha256, and keeps only
# onnxruntime/capi/libonnxruntime.so.1.31.1, which the `ort` crate's load-dynamic mode
# loads at run time (ORT_DYLIB_PATH). On a Jetson, ONNX Runtime with the TensorRT and
# CUDA providers comes from NVIDIA's / jetson-containers' builds instead, not from here.
#
# Usage: scripts/fetch-onnxruntime.sh [CACHE_DIR]
#   CACHE_DIR defaults to $MICA_ONNXRUNTIME_CACHE, else <repo>/.cache/onnxruntime.
# Idempotent: does nothing when the library is already there.
# Last line printed: the `export ORT_DYLIB_PATH=...` line.
set -euo pipefail

readonly ORT_VERSION="1.31.1"
readonly PY_VERSION="3.11"
readonly WHEEL="onnxruntime-${ORT_VERSION}-cp311-cp311-manylinux_2_28_x86_64.whl"
readonly WHEEL_SHA256="5752bd508126ae7c49894d3b9d2e83f0c3d487319246d04c444b393308d7ad7f"

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cache_dir="${1:-${MICA_ONNXRUNTIME_CACHE:-$repo_root/.cache/onnxruntime}}"
mkdir -p "$cache_dir"
cache_dir="$(cd "$cache_dir" && pwd)"
dest="$cache_dir/$ORT_VERSION"
library="$dest/libonnxruntime.so.$ORT_VERSION"

log() { printf '[fetch-onnxruntime] %s\n' "$*" >&2; }

if [[ -f "$library" ]]; then
    log "onnxruntime $ORT_VERSION already present at $library (skipping download)"
else
    python="$(command -v python3 || command -v python || true)"
    if [[ -z "$python" ]]; then
        log "error: no python3 found (needed for pip and to unpack the wheel)"
        exit 1
    fi
    wheel_dir="$cache_dir/wheel"
    mkdir -p "$wheel_dir"
    if [[ ! -f "$wheel_dir/$WHEEL" ]]; then
        log "downloading onnxruntime==$ORT_VERSION (cp${PY_VERSION/./}, manylinux_2_28 x86_64) into $wheel_dir"
        "$python" -m pip download --no-deps --only-binary=:all: \
            --python-version "$PY_VERSION" --platform manylinux_2_28_x86_64 \
            --dest "$wheel_dir" "onnxruntime==$ORT_VERSION" >&2
    fi
    got="$(sha256sum "$wheel_dir/$WHEEL" | cut -d' ' -f1)"
    if [[ "$got" != "$WHEEL_SHA256" ]]; then
        log "error: $wheel_dir/$WHEEL has sha256 $got, expected $WHEEL_SHA256; delete it and rerun"
        exit 1
    fi
    mkdir -p "$dest"
    "$python" - "$wheel_dir/$WHEEL" "$library" "$ORT_VERSION" <<'PY'
import shutil
import sys
import zipfile

wheel, target, version = sys.argv[1:4]
member = f"onnxruntime/capi/libonnxruntime.so.{version}"
with zipfile.ZipFile(wheel) as archive, archive.open(member) as source:
    with open(target + ".part", "wb") as out:
        shutil.copyfileobj(source, out)
PY
    mv "$library.part" "$library"
    log "unpacked $library"
fi
printf 'export ORT_DYLIB_PATH=%q\n' "$library"
