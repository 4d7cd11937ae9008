#!/usr/bin/env bash
# Installs mica as a systemd service: the binary, the config and profiles under
# /etc/mica/, the Grafana dashboard, and the unit. Idempotent: files already up to
# date are left alone, and an edited /etc/mica/mica.toml is never overwritten (the
# shipped one goes beside it as mica.toml.new).
#
#   deploy/install.sh [--prefix /usr/local] [--config orin-agx-sim] [--binary PATH]
#                     [--destdir DIR] [--no-user] [--dry-run]
#
#   --prefix DIR    where bin/mica and share/mica go (default /usr/local)
#   --config NAME   which config/NAME.toml becomes /etc/mica/mica.toml
#                   (default orin-agx-sim: simulated units, runs anywhere)
#   --binary PATH   the mica binary (default target/release/mica, built if absent)
#   --destdir DIR   stage everything under DIR (packaging, tests); implies --no-user
#                   and no systemctl calls
#   --no-user       do not create the `mica` system user
#   --dry-run       print what would be done, change nothing
set -euo pipefail
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

prefix=/usr/local
config_name=orin-agx-sim
binary=""
destdir=""
make_user=1
dry_run=0
while [[ $# -gt 0 ]]; do
    case "$1" in
        --prefix) prefix="$2"; shift 2 ;;
        --config) config_name="$2"; shift 2 ;;
        --binary) binary="$2"; shift 2 ;;
        --destdir) destdir="$2"; make_user=0; shift 2 ;;
        --no-user) make_user=0; shift ;;
        --dry-run) dry_run=1; shift ;;
        -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
        *) echo "install.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done

config_src="$repo_root/config/$config_name.toml"
[[ -f "$config_src" ]] || { echo "install.sh: no config $config_src" >&2; exit 2; }
if [[ -z "$binary" ]]; then
    binary="${CARGO_TARGET_DIR:-$repo_root/target}/release/mica"
    if [[ ! -x "$binary" && $dry_run -eq 0 ]]; then
        (cd "$repo_root" && cargo build --release --bin mica)
    fi
fi
[[ -x "$binary" || $dry_run -eq 1 ]] || { echo "install.sh: no binary at $binary" >&2; exit 2; }

etc="$destdir/etc/mica"
bin="$destdir$prefix/bin"
share="$destdir$prefix/share/mica"
unit_dir="$destdir/etc/systemd/system"
changed=0

run() {
    if [[ $dry_run -eq 1 ]]; then echo "would: $*"; else "$@"; fi
}

# install_file SRC DEST MODE: copies when DEST is missing or differs.
install_file() {
    local src="$1" dest="$2" mode="$3"
    if [[ -f "$dest" ]] && cmp -s "$src" "$dest"; then
        echo "unchanged: $dest"
        return
    fi
    run install -D -m "$mode" "$src" "$dest"
    echo "installed: $dest"
    changed=1
}

install_file "$binary" "$bin/mica" 0755

# The config: never overwrite an edited one.
if [[ -f "$etc/mica.toml" ]] && ! cmp -s "$config_src" "$etc/mica.toml"; then
    install_file "$config_src" "$etc/mica.toml.new" 0640
    echo "kept: $etc/mica.toml (edited; the shipped config is mica.toml.new)"
else
    install_file "$config_src" "$etc/mica.toml" 0640
fi
# Profiles are shipped data: kept in step with the release.
while IFS= read -r -d '' file; do
    rel="${file#"$repo_root/config/"}"
    install_file "$file" "$etc/$rel" 0644
done < <(find "$repo_root/config/profiles" -type f -print0 | sort -z)

# Dashboard and provisioning examples.
install_file "$repo_root/grafana/dashboards/mica.json" "$share/grafana/dashboards/mica.json" 0644
for file in provisioning/datasources/prometheus.yaml provisioning/dashboards/mica.yaml prometheus/prometheus.yml; do
    install_file "$repo_root/grafana/$file" "$share/grafana/$file" 0644
done

# The unit, with this prefix's binary.
unit_tmp="$(mktemp)"
trap 'rm -f "$unit_tmp"' EXIT
sed "s#/usr/local/bin/mica#$prefix/bin/mica#" "$repo_root/deploy/systemd/mica.service" >"$unit_tmp"
install_file "$unit_tmp" "$unit_dir/mica.service" 0644

if [[ $make_user -eq 1 ]]; then
    if id mica >/dev/null 2>&1; then
        echo "unchanged: user mica"
    else
        run useradd --system --home-dir /var/lib/mica --no-create-home --shell /usr/sbin/nologin mica
        echo "created: user mica"
    fi
    for group in video render; do
        if getent group "$group" >/dev/null && ! id -nG mica 2>/dev/null | grep -qw "$group"; then
            run usermod -a -G "$group" mica
            echo "added: mica to group $group"
        fi
    done
    if [[ -z "$destdir" ]]; then
        run chown -R root:mica "$etc"
    fi
fi

if [[ -z "$destdir" && $changed -eq 1 && -d /run/systemd/system ]]; then
    run systemctl daemon-reload
    echo "next: systemctl enable --now mica   (or: systemctl reload mica after a config edit)"
fi
echo "done"
