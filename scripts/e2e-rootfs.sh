#!/usr/bin/env bash
# Build (or reuse) a bootable Debian or Ubuntu root that the e2e suite boots with
# systemd-nspawn, and print its path on stdout.
#
#   scripts/e2e-rootfs.sh DEST [SUITE]
#
# SUITE is bookworm (Debian 12: systemd 252, python 3.11.2; the default), trixie (Debian 13:
# systemd 257, python 3.13) or noble (Ubuntu 24.04: systemd 255, python 3.12).
#
# - Installs systemd-container, debootstrap and zstd with apt-get when they are missing.
# - Debootstraps SUITE (minbase + systemd and the few tools the tests use) into DEST,
#   retrying up to 3 times, and strips the apt caches. It says what it is doing, and how
#   long each part took, on stderr: the first build takes minutes.
# - Checks Ubuntu's archive against Ubuntu's keyring, which Debian does not ship: the
#   ubuntu-keyring package is fetched from that archive and used only if its SHA-256 is the
#   one pinned below.
# - Caches the finished root as a zstd tarball under $HAL0_E2E_CACHE (default:
#   <repo>/.cache/e2e/), keyed by this script's own content hash: change the package list
#   and the cache key changes with it. A cached root unpacks in about a second.
# - Idempotent: when DEST already holds the root of this very script version, nothing runs.
#
# Needs root. Everything but the final path goes to stderr.
set -euo pipefail

if [[ $# -lt 1 || $# -gt 2 || -z "$1" ]]; then
    echo "usage: $0 DEST [bookworm|trixie|noble]" >&2
    exit 2
fi
suite=${2:-bookworm}
case $suite in
bookworm | trixie | noble) ;;
*)
    echo "$0: unknown suite $suite (bookworm, trixie or noble)" >&2
    exit 2
    ;;
esac
if [[ $(id -u) -ne 0 ]]; then
    echo "$0: must run as root (debootstrap, nspawn)" >&2
    exit 1
fi

script_path=$(readlink -f "${BASH_SOURCE[0]}")
repo_dir=$(dirname "$(dirname "$script_path")")
dest=$(readlink -m "$1")
cache_dir=${HAL0_E2E_CACHE:-$repo_dir/.cache/e2e}
key=$( (sha256sum "$script_path" && echo "$suite") | sha256sum | cut -c1-16)
archive="$cache_dir/rootfs-$suite-$key.tar.zst"
stamp_name=.hal0-e2e-rootfs
# libdrm2 and libdrm-amdgpu1: the real lemond 11.x links them (10.x does not).
packages=systemd,systemd-sysv,dbus,python3,python3-venv,curl,procps,iproute2,libdrm2,libdrm-amdgpu1

# Ubuntu: python3-venv is in universe; Debian 12's debootstrap has no noble script, and
# noble is bootstrapped as every Ubuntu since gutsy is.
ubuntu_mirror=http://archive.ubuntu.com/ubuntu
ubuntu_keyring_deb=pool/main/u/ubuntu-keyring/ubuntu-keyring_2023.11.28.1_all.deb
ubuntu_keyring_sha256=36de43b15853ccae0028e9a767613770c704833f82586f28eb262f0311adb8a8

log() { echo "e2e-rootfs: $*" >&2; }

# debootstrap's options and its arguments after the target, per suite, into the globals
# `options` and `mirror`.
debootstrap_args() {
    # $1: a scratch dir for the keyring
    options=(--components=main)
    mirror=()
    [[ $suite == noble ]] || return 0
    local deb=$1/ubuntu-keyring.deb
    mkdir -p "$1"
    curl -fsS --retry 3 --max-time 120 -o "$deb" "$ubuntu_mirror/$ubuntu_keyring_deb" >&2
    if ! echo "$ubuntu_keyring_sha256  $deb" | sha256sum -c --quiet - >&2; then
        log "ubuntu-keyring's SHA-256 is not the pinned one: refusing it"
        return 1
    fi
    dpkg-deb -x "$deb" "$1/ubuntu-keyring"
    options=(--components=main,universe
        "--keyring=$1/ubuntu-keyring/usr/share/keyrings/ubuntu-archive-keyring.gpg")
    mirror=("$ubuntu_mirror" /usr/share/debootstrap/scripts/gutsy)
}

ensure_host_tools() {
    local missing=()
    command -v systemd-nspawn >/dev/null || missing+=(systemd-container)
    command -v debootstrap >/dev/null || missing+=(debootstrap)
    command -v zstd >/dev/null || missing+=(zstd)
    [[ $suite != noble ]] || command -v curl >/dev/null || missing+=(curl)
    if [[ ${#missing[@]} -gt 0 ]]; then
        log "installing ${missing[*]}"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq >&2
        apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
    fi
}

build_root() {
    # $1: empty target directory to debootstrap into
    local target=$1 attempt options mirror
    debootstrap_args "$target.keyring"
    for attempt in 1 2 3; do
        log "debootstrap $suite into $target (attempt $attempt of 3; about a minute, minutes on a busy machine)"
        if debootstrap --variant=minbase "${options[@]}" --include="$packages" "$suite" \
            "$target" "${mirror[@]}" >&2; then
            break
        fi
        if [[ $attempt -eq 3 ]]; then
            log "debootstrap failed 3 times"
            return 1
        fi
        rm -rf "$target"
        mkdir -p "$target"
        sleep $((attempt * 5))
    done
    # No apt caches: they are 80 MB the tests never read.
    rm -rf "$target"/var/cache/apt/*.bin "$target"/var/cache/apt/archives/*.deb \
        "$target"/var/lib/apt/lists/* "$target"/var/log/*.log "$target"/var/log/apt/*
    # A fresh machine-id on every boot; nspawn hands one in.
    : >"$target/etc/machine-id"
    echo hal0-e2e >"$target/etc/hostname"
    # As on any installed Debian (minbase has no netbase): lemond on its defaults (a broken
    # config.json) listens on "localhost" and exits when that does not resolve.
    printf '127.0.0.1\tlocalhost\n::1\t\tlocalhost ip6-localhost ip6-loopback\n' \
        >"$target/etc/hosts"
    # Nothing in the suite logs in: no getty on the container console.
    ln -sf /dev/null "$target/etc/systemd/system/console-getty.service"
}

unpack() {
    log "unpacking $archive into $dest"
    rm -f "$dest/$stamp_name"
    rm -rf "$dest"
    mkdir -p "$dest"
    tar --zstd -xpf "$archive" --numeric-owner --xattrs --xattrs-include='*' -C "$dest"
    # The stamp goes in last: a half-unpacked root never looks current.
    echo "$key" >"$dest/$stamp_name"
}

is_current() {
    [[ -f "$dest/$stamp_name" && $(cat "$dest/$stamp_name") == "$key" ]]
}

if is_current; then
    log "$dest is current ($key)"
    echo "$dest"
    exit 0
fi

ensure_host_tools
mkdir -p "$cache_dir"
# One builder at a time per cache: parallel test sessions share it, and one of them may be
# unpacking into the same DEST right now.
exec 9>"$cache_dir/.lock"
flock 9
if is_current; then
    echo "$dest"
    exit 0
fi

if [[ ! -f "$archive" ]]; then
    work="$cache_dir/build-$key.$$"
    trap 'rm -rf "$work" "$work.keyring" "$archive.tmp.$$"' EXIT
    rm -rf "$work" "$work.keyring"
    mkdir -p "$work"
    build_root "$work"
    log "caching the root as $archive"
    tar --zstd -cpf "$archive.tmp.$$" --numeric-owner --xattrs --xattrs-include='*' \
        -C "$work" .
    mv -f "$archive.tmp.$$" "$archive"
    rm -rf "$work" "$work.keyring"
    trap - EXIT
    # Older cache generations of this script are dead weight.
    find "$cache_dir" -maxdepth 1 -name "rootfs-$suite-*.tar.zst" ! -name "${archive##*/}" \
        -delete
fi

unpack
echo "$dest"
