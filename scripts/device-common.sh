# The shared start and end of the device scripts (device-bench.sh, device-pipeline.sh),
# sourced by them; not run on its own.
#
#   device_start NAME BUDGET_S
#       cd to the repository root; sets repo_root, out ($OUT, default out/NAME; kept),
#       work (a scratch folder, removed on exit), bin (.device/mica), python ($PYTHON,
#       default python3), budget_s and started_at; copies everything the script prints
#       into $out/log.txt from here on
#   step TEXT      prints a step heading with the seconds since the start
#   elapsed        seconds since the start
#   over_budget    true once budget_s seconds have passed (later steps skip themselves)
#   typed BIN ARGS...
#                  prints the command as a user would type it in a checkout: `mica`
#                  for the carried binary, arguments shell-quoted (results record this)
#   device_finish  lets the log copy write its last lines before the script returns

device_start() {
    local name=$1
    repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
    cd "$repo_root" || exit 1
    out="${OUT:-$repo_root/out/$name}"
    mkdir -p "$out"
    work="$(mktemp -d "/tmp/mica-$name.XXXXXX")"
    trap 'rm -rf "$work"' EXIT # scratch only: everything kept is under $out
    bin="$repo_root/.device/mica"
    python="${PYTHON:-python3}"
    budget_s=$2
    started_at=$(date +%s)
    exec > >(tee -a "$out/log.txt") 2>&1
    tee_pid=$!
}

step() { printf '\n==> [%3ss] %s\n' "$(($(date +%s) - started_at))" "$*"; }
elapsed() { echo $(($(date +%s) - started_at)); }
over_budget() { [[ $(elapsed) -ge $budget_s ]]; }
typed() {
    local words=(mica)
    local arg
    for arg in "${@:2}"; do
        if [[ $arg =~ ^[A-Za-z0-9_./,:=+@%-]+$ ]]; then
            words+=("$arg")
        else
            words+=("'${arg//\'/\'\\\'\'}'")
        fi
    done
    printf '%s\n' "${words[*]}"
}

device_finish() {
    exec 1>&- 2>&-
    wait "$tee_pid" 2>/dev/null || true
}
