# shellcheck shell=bash
# hal0-lemonade as one numbered step of a larger bash installer: hal0's install.sh runs it as
# step 5 of 10. Source this file, then call `lemonade_step 5 10 [INSTALL OPTIONS...]`
# (e.g. `--artifact /srv/mirror/lemonade.tar.gz --sha256 HEX` for an offline mirror).
#
#   HAL0_LEMONADE_PYZ         the one-file installer (`bash scripts/pyz` builds it)
#   HAL0_LEMONADE_PYZ_SHA256  its SHA-256, pinned by the embedding installer
#   DEV_MODE=1                show what would change, change nothing (the installer's --dev)
#   HAL0_LEMONADE_ROOT        act on this directory as if it were / (default /; for tests)
#   HAL0_LEMONADE_PYTHON      the interpreter that runs it (default /usr/bin/python3)
#
# Prints the installer's own step lines, numbered [5/10]..[10/10], and its closing line.
# Returns 0 when Lemonade is installed, and also when only its service did not become active
# and healthy (the installer's exit 3): that failure is soft, as in hal0's original step, so
# hal0-api still starts and shows its dead-lemond banner. Otherwise returns the installer's
# exit code (1: a step failed, and the installer said which and how to recover; 2: a usage
# error) or 1 when the pyz is not the pinned one. Safe under `set -e`.
lemonade_step() {
    local step=$1 total=$2
    shift 2
    local pyz=${HAL0_LEMONADE_PYZ:?HAL0_LEMONADE_PYZ must name hal0-lemonade.pyz}
    local want=${HAL0_LEMONADE_PYZ_SHA256:?HAL0_LEMONADE_PYZ_SHA256 must pin its digest}
    local root=${HAL0_LEMONADE_ROOT:-/}
    local python=${HAL0_LEMONADE_PYTHON:-/usr/bin/python3}
    local cli=${root%/}/usr/local/sbin/hal0-lemonade
    local got rc=0
    got=$(sha256sum "$pyz") || return 1
    got=${got%% *}
    if [[ $got != "$want" ]]; then
        echo "error: $pyz has SHA-256 $got, not the pinned $want: nothing installed" >&2
        return 1
    fi
    local args=(install --root "$root" --step-offset "$((step - 1))" --step-total "$total" "$@")
    if [[ ${DEV_MODE:-0} == 1 ]]; then
        "$python" "$pyz" "${args[@]}" --dev || rc=$?
        return "$rc"
    fi
    # Into place by a rename, so a kill leaves the old file or the new one, never half.
    install -D -m 0755 "$pyz" "$cli.new" && mv -f "$cli.new" "$cli" || return 1
    "$python" "$cli" "${args[@]}" || rc=$?
    if ((rc == 3)); then
        echo "warning: Lemonade is installed but hal0-lemonade.service is not healthy;" \
            "continuing (see \`hal0-lemonade status\` and \`journalctl -u hal0-lemonade\`)" >&2
        return 0
    fi
    return "$rc"
}
