#!/usr/bin/env bash
# End-to-end check of mica's metrics, dashboard and hot reload, against a real
# Prometheus (Debian's `prometheus` package) on loopback:
#
#  1. starts `mica serve` (simulated Orin units, policy round_robin, admin token set)
#     on free ports, with device telemetry read from a fixture Jetson sysfs tree (this
#     machine has no GPU: the fixture stands in for /sys, the code path is the real one);
#  2. puts load on it over HTTP with wrk for the whole run;
#  3. while the load runs: edits the config file to contention_aware (file watcher),
#     writes an invalid config (must be counted and ignored), restores it, sends SIGHUP,
#     and exercises the admin endpoint;
#  4. checks through Prometheus's HTTP API that every PromQL expression of
#     grafana/dashboards/mica.json returns data (printing each panel, query and series
#     count), that `promtool check metrics` passes on the exposition, and that no
#     request failed; prints throughput before and after the policy swap.
#
# Installs prometheus and wrk with apt-get when run as root and they are missing.
set -euo pipefail
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"

need=()
command -v prometheus >/dev/null && command -v promtool >/dev/null || need+=(prometheus)
command -v wrk >/dev/null || need+=(wrk)
if [[ ${#need[@]} -gt 0 ]]; then
    if [[ $(id -u) -ne 0 ]]; then
        echo "prometheus-test: missing ${need[*]} (apt-get install ${need[*]})" >&2
        exit 1
    fi
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

cargo build -q --bin mica
binary="${CARGO_TARGET_DIR:-$repo_root/target}/debug/mica"

tmp="$(mktemp -d)"
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$tmp"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
http_port=$(free_port)
metrics_port=$(free_port)
prom_port=$(free_port)
token="prometheus-test-admin-token-0123"

# The config: the simulated Orin with absolute profile paths, a small input tensor
# (the sim engine ignores the data) and an admin token.
write_config() { # POLICY_LINE
    python3 - "$repo_root/config/orin-agx-sim.toml" "$tmp/mica.toml.tmp" "$1" "$token" <<'PY'
import re, sys, os
src, dst, policy, token = sys.argv[1:5]
base = os.path.dirname(os.path.abspath(src))
text = open(src).read()
text = re.sub(r'(contention_file|profile) = "([^"]+)"',
              lambda m: f'{m.group(1)} = "{os.path.join(base, m.group(2))}"', text)
text = re.sub(r'^policy = .*$', policy, text, count=1, flags=re.M)
text = text.replace('input_shape = [3, 224, 224]', 'input_shape = [3, 8, 8]')
text += f'\n[admin]\ntoken = "{token}"\n'
open(dst, "w").write(text)
PY
    mv "$tmp/mica.toml.tmp" "$tmp/mica.toml" # as editors save: write, then rename
}
write_config 'policy = { type = "round_robin" }'

# A Jetson AGX Orin sysfs tree with fixed readings (GPU load, EMC, rails, DLA, thermal).
sysfs="$tmp/sysfs"
fixture() { mkdir -p "$(dirname "$sysfs/$1")"; printf '%s\n' "$2" >"$sysfs/$1"; }
fixture sys/devices/platform/gpu.0/load 734
fixture sys/class/devfreq/17000000.ga10b/cur_freq 1300500000
fixture sys/kernel/actmon_avg_activity/mc_all 1066000
fixture sys/kernel/debug/bpmp/debug/clk/emc/rate 3199000000
fixture sys/class/hwmon/hwmon1/name ina3221
fixture sys/class/hwmon/hwmon1/in1_label VDD_GPU_SOC
fixture sys/class/hwmon/hwmon1/in1_input 5000
fixture sys/class/hwmon/hwmon1/curr1_input 1600
fixture sys/class/hwmon/hwmon1/in2_label VDD_CPU_CV
fixture sys/class/hwmon/hwmon1/in2_input 5000
fixture sys/class/hwmon/hwmon1/curr2_input 400
fixture sys/devices/platform/host1x/15880000.nvdla0/power/runtime_status active
fixture sys/kernel/debug/bpmp/debug/clk/nvdla0/rate 1600000000
fixture sys/class/thermal/thermal_zone1/type GPU-therm
fixture sys/class/thermal/thermal_zone1/temp 48500

MICA__SERVER__GRPC_PORT=0 MICA__SERVER__PORT="$http_port" MICA__METRICS__PORT="$metrics_port" \
    MICA_TELEMETRY_SYSFS_ROOT="$sysfs" RUST_LOG=info \
    "$binary" serve --config "$tmp/mica.toml" >"$tmp/mica.log" 2>&1 &
mica_pid=$!
pids+=("$mica_pid")
fail() { echo "prometheus-test: $*" >&2; echo "--- mica log" >&2; tail -n 40 "$tmp/mica.log" >&2; exit 1; }
for _ in $(seq 1 150); do
    curl -sf "http://127.0.0.1:$http_port/v2/health/ready" >/dev/null && break
    kill -0 "$mica_pid" 2>/dev/null || fail "mica serve exited early"
    sleep 0.1
done
curl -sf "http://127.0.0.1:$http_port/v2/health/ready" >/dev/null || fail "mica serve never became ready"

cat >"$tmp/prometheus.yml" <<EOF
global:
  scrape_interval: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: mica
    static_configs:
      - targets: ["127.0.0.1:$metrics_port"]
EOF
prometheus --config.file="$tmp/prometheus.yml" --storage.tsdb.path="$tmp/tsdb" \
    --web.listen-address="127.0.0.1:$prom_port" >"$tmp/prometheus.log" 2>&1 &
pids+=("$!")
prom_query() { # EXPR → the first result's value through Prometheus's API (empty if none)
    curl -sf --get --data-urlencode "query=$1" "http://127.0.0.1:$prom_port/api/v1/query" 2>/dev/null \
        | python3 -c 'import json,sys; r=json.load(sys.stdin)["data"]["result"]; print(r[0]["value"][1] if r else "")' \
        2>/dev/null || true
}
wait_prom() { # EXPR WHAT: until EXPR has a result with value 1 (a busy CI machine can take
    # many seconds to start Prometheus; the throughput window and the policy-change
    # annotation need scrapes from before the swap)
    for _ in $(seq 1 600); do
        [[ "$(prom_query "$1")" == 1 ]] && return 0
        sleep 0.1
    done
    echo "prometheus-test: Prometheus never $2" >&2; tail -n 20 "$tmp/prometheus.log" >&2; exit 1
}
wait_prom 'up{job="mica"}' "scraped mica"

# Load for the whole run: wrk, 32 connections, one-image binary requests.
load_seconds=24
wrk -t2 -c32 -d"${load_seconds}s" -s scripts/wrk-infer.lua "http://127.0.0.1:$http_port" \
    -- model=resnet50 shape=1,3,8,8 >"$tmp/wrk.log" 2>&1 &
wrk_pid=$!
pids+=("$wrk_pid")

metric() { # NAME_WITH_LABELS → value on mica's /metrics (empty if absent)
    curl -sf "http://127.0.0.1:$metrics_port/metrics" | awk -v m="$1" '$1 == m { print $2 }'
}
wait_metric() { # NAME_WITH_LABELS VALUE
    for _ in $(seq 1 50); do
        [[ "$(metric "$1")" == "$2" ]] && return 0
        sleep 0.1
    done
    fail "$1 never reached $2 (is $(metric "$1"))"
}

# Warm-up: from the first scrape that saw images, 6 s more of round_robin (the window
# before the swap is 5 s).
wait_prom '(sum(mica_images_total) > bool 0)' "saw an image answered"
sleep 6
t_swap=$(date +%s.%N)
write_config 'policy = { type = "contention_aware" }'
wait_metric 'mica_policy_info{policy="contention_aware"}' 1
wait_metric 'mica_config_reloads_total{result="applied"}' 1
t_swapped=$(date +%s.%N)
echo "policy swapped by a config file edit: round_robin -> contention_aware"
sleep 6
t_invalid=$(date +%s.%N)
write_config 'policy = { type = "no_such_policy" }'
wait_metric 'mica_config_reloads_total{result="invalid"}' 1
[[ "$(metric 'mica_policy_info{policy="contention_aware"}')" == 1 ]] || fail "an invalid config changed the policy"
grep -q 'config reload: invalid config' "$tmp/mica.log" || fail "the invalid config was not logged"
echo "invalid config: counted (result=\"invalid\"), logged, policy kept"
write_config 'policy = { type = "contention_aware" }'
wait_metric 'mica_config_reloads_total{result="unchanged"}' 1
kill -HUP "$mica_pid"
wait_metric 'mica_config_reloads_total{result="unchanged"}' 2
echo "SIGHUP: reloaded (unchanged)"

# A few malformed requests, so the rejection series have something to show (wrk's
# requests, all well-formed, must all succeed).
for _ in 1 2 3; do
    code=$(curl -s -o /dev/null -w '%{http_code}' -H 'Content-Type: application/json' \
        -d '{"inputs":[{"name":"input","shape":[1,3,8,8],"datatype":"FP32","data":[1]}]}' \
        "http://127.0.0.1:$http_port/v2/models/resnet50/infer")
    [[ "$code" == 400 ]] || fail "a malformed request answered $code, expected 400"
done

admin="http://127.0.0.1:$metrics_port/v2/admin/policy"
code=$(curl -s -o /dev/null -w '%{http_code}' "$admin")
[[ "$code" == 401 ]] || fail "admin without a token answered $code, expected 401"
curl -sf -H "Authorization: Bearer $token" "$admin" | grep -q '"name":"contention_aware"' \
    || fail "GET $admin does not show contention_aware"
code=$(curl -s -o /dev/null -w '%{http_code}' -X PUT -H "Authorization: Bearer $token" \
    -H 'Content-Type: application/json' -d '{"type":"no_such_policy"}' "$admin")
[[ "$code" == 400 ]] || fail "admin PUT of an unknown policy answered $code, expected 400"
curl -sf -X PUT -H "Authorization: Bearer $token" -H 'Content-Type: application/json' \
    -d '{"type":"contention_aware"}' "$admin" | grep -q '"changed":false' \
    || fail "admin PUT of the running policy did not answer changed=false"
echo "admin endpoint: 401 without token, GET, PUT (400 on an unknown policy)"

wait "$wrk_pid" || fail "wrk failed: $(cat "$tmp/wrk.log")"
t_end=$(date +%s.%N)
cat "$tmp/wrk.log"
if grep -qE 'Non-2xx or 3xx responses|Socket errors' "$tmp/wrk.log"; then
    fail "requests failed during the run (see wrk's report above)"
fi
sleep 3 # the last scrapes

curl -sf "http://127.0.0.1:$metrics_port/metrics" >"$tmp/exposition.txt"
# promtool parses the exposition (a parse error fails outright) and lints names. The
# lint findings allowed are about Triton's own series (`nv_inference_*`, kept under
# Triton's names so Triton dashboards and perf_analyzer work); every `mica_*` series
# must pass the lint.
lint="$(promtool check metrics <"$tmp/exposition.txt" 2>&1)" || true
if grep -q 'error while linting' <<<"$lint"; then
    echo "$lint"; fail "promtool cannot parse the exposition"
fi
if grep -v '^nv_inference_' <<<"$lint" | grep -q .; then
    echo "$lint"; fail "promtool check metrics: findings on mica's own series"
fi
echo "promtool check metrics: ok ($(grep -vc '^#' "$tmp/exposition.txt") samples; \
$(grep -c . <<<"$lint" || true) naming findings, all on Triton's nv_inference_* names)"

python3 - "http://127.0.0.1:$prom_port" grafana/dashboards/mica.json \
    "$t_swap" "$t_swapped" "$t_invalid" "$t_end" <<'PY'
import json, sys, time, urllib.parse, urllib.request
prom, dashboard_file, t_swap, t_swapped, t_invalid, t_end = sys.argv[1], sys.argv[2], *map(float, sys.argv[3:])

def query(expr, at=None):
    params = {"query": expr}
    if at is not None:
        params["time"] = f"{at:.3f}"
    url = f"{prom}/api/v1/query?" + urllib.parse.urlencode(params)
    with urllib.request.urlopen(url, timeout=10) as response:
        body = json.load(response)
    if body.get("status") != "success":
        raise SystemExit(f"query failed: {expr}: {body}")
    return body["data"]["result"]

# Grafana's variables, as the dashboard would resolve them over the last minute.
substitutions = {"$__rate_interval": "10s", "$__interval": "1m", "$__range": "1m", "$unit": ".*"}
def resolve(expr):
    for name, value in substitutions.items():
        expr = expr.replace(name, value)
    return expr

dashboard = json.load(open(dashboard_file))
checks = [(p["title"], t["expr"]) for p in dashboard["panels"] for t in p["targets"]]
checks += [("annotation: " + a["name"], a["expr"]) for a in dashboard["annotations"]["list"] if "expr" in a]
checks += [("variable: unit", "mica_unit_streams")]
empty = []
print(f"\n{'series':>6}  panel: query")
for title, expr in checks:
    series = query(resolve(expr))
    # A series whose value is NaN (an empty histogram, 0/0) is not data: at least one
    # series must carry a number.
    finite = [r for r in series if r["value"][1].lower() not in ("nan", "+inf", "-inf")]
    print(f"{len(finite):>6}  {title}: {expr}")
    if not finite:
        empty.append(title)

def images(at):
    result = query("sum(mica_images_total)", at)
    return float(result[0]["value"][1]) if result else 0.0
def shares(start, end):
    def counts(at):
        return {r["metric"]["unit"]: float(r["value"][1])
                for r in query("sum by (unit) (mica_dispatch_decisions_total)", at)}
    a, b = counts(start), counts(end)
    total = sum(b.get(u, 0) - a.get(u, 0) for u in b) or 1
    return ", ".join(f"{u} {100 * (b[u] - a.get(u, 0)) / total:.0f}%" for u in sorted(b))
before = (t_swap - 5, t_swap)          # round_robin, after warm-up
after = (t_swapped + 1, t_invalid)     # contention_aware
for name, (start, end) in (("round_robin", before), ("contention_aware", after)):
    rate = (images(end) - images(start)) / (end - start)
    print(f"throughput {name:>16}: {rate:8.1f} images/s over {end - start:4.1f} s; dispatch shares: {shares(start, end)}")
if empty:
    raise SystemExit(f"dashboard queries with no data: {empty}")
print(f"every dashboard query returned data ({len(checks)} queries)")
PY
echo "prometheus-test: passed"
