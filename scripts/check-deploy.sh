#!/usr/bin/env bash
# Checks the deployment files: `systemd-analyze verify` on the unit, and
# deploy/install.sh staged into a temporary root (installs everything, a second run
# changes nothing, --dry-run changes nothing).
set -euo pipefail
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"

if ! command -v systemd-analyze >/dev/null; then
    if [[ $(id -u) -eq 0 ]]; then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq systemd >/dev/null
    else
        echo "check-deploy: systemd-analyze is missing (apt-get install systemd)" >&2
        exit 1
    fi
fi

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
# The unit and the install script only need an executable at the binary's path.
printf '#!/bin/sh\nexit 0\n' >"$tmp/mica"
chmod +x "$tmp/mica"

bash -n deploy/install.sh
stage="$tmp/root"
first="$(deploy/install.sh --destdir "$stage" --binary "$tmp/mica")"
for file in usr/local/bin/mica etc/mica/mica.toml etc/mica/profiles/orin-agx/platform.toml \
    etc/systemd/system/mica.service usr/local/share/mica/grafana/dashboards/mica.json; do
    [[ -f "$stage/$file" ]] || { echo "$first"; echo "check-deploy: install.sh did not install $file" >&2; exit 1; }
done
second="$(deploy/install.sh --destdir "$stage" --binary "$tmp/mica")"
if grep -q '^installed:' <<<"$second"; then
    echo "$second"; echo "check-deploy: a second install.sh run changed files (not idempotent)" >&2; exit 1
fi
echo "# edited" >>"$stage/etc/mica/mica.toml"
third="$(deploy/install.sh --destdir "$stage" --binary "$tmp/mica")"
grep -q 'kept: .*mica.toml' <<<"$third" || { echo "$third"; echo "check-deploy: an edited mica.toml was not kept" >&2; exit 1; }
before="$(find "$stage" -type f -exec md5sum {} + | sort)"
deploy/install.sh --destdir "$stage" --binary "$tmp/mica" --prefix /opt/mica --dry-run >/dev/null
after="$(find "$stage" -type f -exec md5sum {} + | sort)"
[[ "$before" == "$after" ]] || { echo "check-deploy: --dry-run changed files" >&2; exit 1; }
echo "install.sh: installs, is idempotent, keeps an edited config, --dry-run changes nothing"

# Verify the unit as installed, its ExecStart pointed at the staged binary.
mkdir -p "$tmp/unit"
sed "s#/usr/local/bin/mica#$stage/usr/local/bin/mica#" "$stage/etc/systemd/system/mica.service" \
    >"$tmp/unit/mica.service"
output="$(systemd-analyze verify "$tmp/unit/mica.service" 2>&1)" || {
    echo "$output"; echo "check-deploy: systemd-analyze verify failed" >&2; exit 1;
}
# verify prints warnings without failing: only those about mica.service matter.
if grep -i 'mica.service' <<<"$output"; then
    echo "check-deploy: systemd-analyze verify reported problems in mica.service" >&2
    exit 1
fi
echo "systemd-analyze verify deploy/systemd/mica.service: ok"
