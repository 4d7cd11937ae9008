#!/usr/bin/env bash
# Stages what a device script needs on the GPU machine, which has no Rust toolchain:
# builds here, with libtorch 2.11 (scripts/fetch-libtorch.sh), the release `mica` with
# `--features torch` and the test binary of engines/tests/torch_resnet50.rs (the
# agreement checks), strips both and copies them with the device scripts into one
# folder (default .device-run/, ignored by git). Carry that folder in the device call
# and run the script from it:
#
#   scripts/stage-device.sh && # then, on the GPU machine:
#   bash .device-run/device-graphs.sh compiled
#
# Environment: CARGO_TARGET_DIR (default <repo>/target-torch, kept apart from the
# plain build so the two do not rebuild each other), MICA_LIBTORCH_CACHE (see
# fetch-libtorch.sh), STAGE_DIR.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"
stage="${STAGE_DIR:-$repo_root/.device-run}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$repo_root/target-torch}"
# Debug info would make the binaries too large to carry (64 MiB per call in all).
export CARGO_PROFILE_RELEASE_DEBUG=0
eval "$(scripts/fetch-libtorch.sh | grep '^export ')"

log() { printf '[stage-device] %s\n' "$*" >&2; }

log "building mica (release, --features torch) in $CARGO_TARGET_DIR"
cargo build --release --features torch --bin mica
log "building the agreement test binary (engines/tests/torch_resnet50.rs)"
agreement="$(cargo test --release -p mica-engines --features torch --test torch_resnet50 \
    --no-run --message-format=json 2>/dev/null |
    python3 -c 'import json,sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == "torch_resnet50":
        print(m["executable"])')"
if [[ -z $agreement || ! -x $agreement ]]; then
    log "error: no torch_resnet50 test binary was built"
    exit 1
fi

rm -rf "$stage"
mkdir -p "$stage"
strip -o "$stage/mica" "$CARGO_TARGET_DIR/release/mica"
strip -o "$stage/torch_resnet50" "$agreement"
cp scripts/device-*.sh scripts/device_*.py scripts/export_model.py scripts/torch_reference.py \
    scripts/onnx_reference.py "$stage/"
du -sh "$stage" >&2
log "staged in $stage; carry it as [\"${stage#"$repo_root"/}\"]"
