#!/usr/bin/env bash
# The baseline: hal0's original bash step (PR-159, "Lemonade daemon") doing the same work as
# `hal0-lemonade install --root ROOT --no-start`, relocated under ROOT so that it can run side
# by side with the installer on a sandbox root. What it does, in the seed's order:
#   the release: skip when /opt/lemonade/.installed-version is current, else curl the pinned
#     tarball, `sha256sum -c`, extract into /opt/lemonade (--strip-components=1), write the
#     marker;
#   the account: an empty accounts database under ROOT when there is none (as the installer
#     does for a sandbox root), groupadd + useradd --system (idempotent), render/video where
#     they exist; the state dirs, owned by hal0;
#   the config: the locked baseline (a heredoc) written to a temp file, renamed over
#     config.json;
#   the unit: written in place; `systemctl --root ROOT enable`.
# Not done, as the seed did not: no fsync, no digest of the extracted files, no rollback.
#
#   bash bench/seed_step.sh ROOT URL SHA256 [THREADS]
set -euo pipefail
root=$1 url=$2 sha=$3 threads=${4:-2}
version=10.6.0
opt=$root/opt/lemonade
home=$root/var/lib/hal0
state=$home/lemonade

# -- the release --------------------------------------------------------------------------
if [[ $(head -n1 "$opt/.installed-version" 2>/dev/null || true) != "$version" ]]; then
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    curl -fsSL -o "$tmp/lemonade.tar.gz" "$url"
    echo "$sha  $tmp/lemonade.tar.gz" | sha256sum -c --quiet -
    rm -rf "$opt"
    mkdir -p "$opt"
    tar -xzf "$tmp/lemonade.tar.gz" -C "$opt" --strip-components=1
    echo "$version" >"$opt/.installed-version"
fi

# -- the account ----------------------------------------------------------------------------
mkdir -p "$root/etc"
for db in passwd group shadow gshadow; do
    [[ -e $root/etc/$db ]] || install -m "$([[ $db == *shadow ]] && echo 0640 || echo 0644)" \
        /dev/null "$root/etc/$db"
done
grep -q '^hal0:' "$root/etc/group" || groupadd --prefix "$root" --system hal0
grep -q '^hal0:' "$root/etc/passwd" ||
    useradd --prefix "$root" --system --gid hal0 --home-dir /var/lib/hal0 --no-create-home \
        --shell /usr/sbin/nologin hal0
for extra in render video; do
    if grep -q "^$extra:" "$root/etc/group"; then
        usermod --prefix "$root" -aG "$extra" hal0
    fi
done
uid=$(awk -F: '$1 == "hal0" {print $3}' "$root/etc/passwd")
gid=$(awk -F: '$1 == "hal0" {print $3}' "$root/etc/group")
mkdir -p "$state" "$home/models" "$home/huggingface"
chown -R "$uid:$gid" "$home"
chmod 0750 "$home" "$state" "$home/models" "$home/huggingface"

# -- the config -----------------------------------------------------------------------------
cat >"$state/config.json.tmp" <<JSON
{
  "config_version": 1,
  "host": "127.0.0.1",
  "port": 13305,
  "ctx_size": 4096,
  "max_loaded_models": 4,
  "extra_models_dir": "/var/lib/hal0/models",
  "global_timeout": 900,
  "no_broadcast": true,
  "log_level": "info",
  "rocm_channel": "stable",
  "llamacpp": {"args": "--parallel 1 --threads $threads", "backend": "rocm", "prefer_system": false},
  "flm": {"args": "--asr 1 --embed 1"},
  "kokoro": {"cpu_bin": "builtin"},
  "whispercpp": {"backend": "vulkan"},
  "sdcpp": {"backend": "rocm", "steps": 20, "cfg_scale": 7.0, "width": 512, "height": 512}
}
JSON
chown "$uid:$gid" "$state/config.json.tmp"
chmod 0640 "$state/config.json.tmp"
mv -f "$state/config.json.tmp" "$state/config.json"

# -- the unit ---------------------------------------------------------------------------------
mkdir -p "$root/etc/systemd/system"
cat >"$root/etc/systemd/system/hal0-lemonade.service" <<UNIT
[Unit]
Description=hal0 Lemonade Server
After=network-online.target
Wants=network-online.target

[Service]
Type=simple
User=hal0
Group=hal0
ExecStart=/opt/lemonade/lemond /var/lib/hal0/lemonade
ExecStop=/usr/bin/curl -fsS -X POST http://127.0.0.1:13305/internal/shutdown
Restart=on-failure
LimitMEMLOCK=infinity
CPUQuota=80%
Environment=HOME=/var/lib/hal0

[Install]
WantedBy=multi-user.target
UNIT
systemctl --root="$root" enable hal0-lemonade.service 2>/dev/null
