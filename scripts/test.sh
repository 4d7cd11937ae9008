#!/usr/bin/env bash
# The test suite: what a developer runs, and what CI runs (through .ci/run).
#
#   bash scripts/test.sh            everything that needs no GPU
#   MICA_SKIP_TORCH=1 ...           skip the torch engine's CPU tests (libtorch download)
#   MICA_SKIP_PYTHON=1 ...          skip the tritonclient compatibility check
#
# Installs what it needs itself (Python packages into a venv under .cache/, Debian
# packages when run as root), so it works on a fresh machine.
set -euo pipefail
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

step() { printf '\n==> %s\n' "$*"; }

step "ONNX Runtime 1.31.1, CPU build (cached; scripts/fetch-onnxruntime.sh)"
eval "$(scripts/fetch-onnxruntime.sh)"
# The onnx engine's tests fail, rather than skip, without the library.
export MICA_REQUIRE_ONNXRUNTIME=1

step "cargo test --workspace (unit, property and integration tests)"
cargo test --workspace

if [[ -z "${MICA_SKIP_PYTHON:-}" ]]; then
    step "tritonclient.http against mica serve"
    bash scripts/tritonclient-test.sh
fi

step "Prometheus scrapes mica serve; every dashboard query returns data; hot reload"; bash scripts/prometheus-test.sh
step "deployment: systemd-analyze verify, install.sh"; bash scripts/check-deploy.sh

if [[ -z "${MICA_SKIP_TORCH:-}" ]]; then
    step "torch engine (libtorch 2.11.0, CPU)"
    bash scripts/ci-torch.sh
fi
step "all tests passed"
