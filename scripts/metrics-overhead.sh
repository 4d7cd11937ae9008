#!/usr/bin/env bash
# Metrics overhead: `mica bench` on the null engine with metrics on vs `--no-metrics`,
# in alternating pairs, per concurrency level. Prints each pair's requests/s and CPU
# time per request (user + system of the bench process, warm-up included: far less
# noisy than requests/s on a shared host), then the medians. The issue's target is a
# median requests/s ratio (on / off) of at least 0.97.
#
#   scripts/metrics-overhead.sh [PAIRS] [CONCURRENCY...]   (defaults: 7 pairs, 1 64)
#   MICA_BIN=path/to/mica DURATION=3s scripts/metrics-overhead.sh 9 1 16 64
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${MICA_BIN:-${CARGO_TARGET_DIR:-target}/release/mica}
pairs=${1:-7}
shift || true
levels=${*:-1 64}
exec python3 - "$bin" "$pairs" "${DURATION:-3s}" $levels <<'PY'
import json, resource, statistics, subprocess, sys

binary, pairs, duration, levels = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4:]
WARMUP_S = 1.0


def run_one(concurrency, metrics):
    """One bench run: (requests/s, CPU microseconds per request)."""
    command = [binary, "bench", "-c", "config/null.toml", "--concurrency", concurrency,
               "--duration", duration, "--warmup", f"{WARMUP_S}s", "--no-progress", "--json"]
    if not metrics:
        command.append("--no-metrics")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu_s = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    report = json.loads(out)
    rate = report["total"]["requests"] / report["duration_s"]
    # The warm-up's requests are not in the report: estimate them at the same rate.
    requests = rate * (report["duration_s"] + WARMUP_S)
    return rate, cpu_s * 1e6 / requests


for concurrency in levels:
    rows = []
    for pair in range(1, pairs + 1):
        on, on_cpu = run_one(concurrency, True)
        off, off_cpu = run_one(concurrency, False)
        rows.append((on / off, on_cpu, off_cpu))
        print(f"concurrency {concurrency} pair {pair}: requests/s on {on:.0f} off {off:.0f} "
              f"ratio {on / off:.3f}; cpu us/request on {on_cpu:.3f} off {off_cpu:.3f}",
              flush=True)
    ratio = statistics.median(r[0] for r in rows)
    on_cpu = statistics.median(r[1] for r in rows)
    off_cpu = statistics.median(r[2] for r in rows)
    cpu_ratio = statistics.median(r[2] / r[1] for r in rows)
    print(f"concurrency {concurrency}: median requests/s ratio {ratio:.3f}; median cpu "
          f"us/request on {on_cpu:.3f} off {off_cpu:.3f} (off/on {cpu_ratio:.3f})", flush=True)
PY
