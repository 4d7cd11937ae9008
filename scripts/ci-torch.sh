#!/usr/bin/env bash
# CI for the torch engine, on a host without a GPU:
#   1. fetch libtorch 2.11.0 from the PyPI wheel (cached; scripts/fetch-libtorch.sh)
#   2. cargo build --features torch            (the whole workspace, the mica binary too)
#   3. cargo test -p mica-engines --features torch
#        CPU tests on the committed tiny model (engines/tests/fixtures/) against PyTorch's
#        output; CUDA unit kinds must fail to load with a clear error
#   4. cargo test --features torch --test pipeline_torch --test tune_real
#        the tiny staged model through the pipeline actors and through `mica serve` equals
#        the unsplit model's output; a short `mica tune --backend real` over two CPU units
#   5. cargo clippy --workspace --features torch --all-targets -D warnings
#        (the CUDA paths live in the same crates, so compiling them here checks them)
#
# Environment:
#   MICA_LIBTORCH_CACHE  cache folder for libtorch (default <repo>/.cache/libtorch)
#   CARGO_TARGET_DIR     kept if set; default <repo>/target-torch, apart from the plain
#                        build so that switching features does not rebuild everything
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"

step() { printf '\n==> %s\n' "$*"; }
elapsed() { printf '    (%ss)\n' "$((SECONDS - $1))"; }

step "fetching libtorch 2.11.0 (cached)"
start=$SECONDS
exports="$(scripts/fetch-libtorch.sh)"
eval "$exports"
printf '    %s\n' "$exports"
elapsed "$start"
for var in LIBTORCH LIBTORCH_CXX11_ABI LD_LIBRARY_PATH; do
    if [[ -z "${!var:-}" ]]; then
        echo "error: fetch-libtorch.sh did not set $var" >&2
        exit 1
    fi
done
if [[ ! -f "$LIBTORCH/lib/libtorch_cpu.so" ]]; then
    echo "error: $LIBTORCH/lib/libtorch_cpu.so is missing; delete the cache and rerun" >&2
    exit 1
fi
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$repo_root/target-torch}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
echo "    CARGO_TARGET_DIR=$CARGO_TARGET_DIR"

step "cargo build --features torch"
start=$SECONDS
cargo build --features torch
elapsed "$start"

step "cargo test -p mica-engines --features torch"
start=$SECONDS
cargo test -p mica-engines --features torch
elapsed "$start"

step "cargo test --features torch --test pipeline_torch --test tune_real"
start=$SECONDS
cargo test --features torch --test pipeline_torch --test tune_real
elapsed "$start"

step "cargo clippy --workspace --features torch --all-targets -- -D warnings"
start=$SECONDS
cargo clippy --workspace --features torch --all-targets -- -D warnings
elapsed "$start"

step "torch engine CI passed"
