# Sourced by scripts/demo and scripts/test: make a venv and install the project with its
# pinned dev tools.  Idempotent.
#
#   ensure_venv [DIR [PYTHON]]   default: .venv from Debian's /usr/bin/python3 (3.11.2, the
#                                Python the installer's targets run)
set -euo pipefail

ensure_venv() {
    local dir=${1:-.venv} py=${2:-/usr/bin/python3}
    [ -x "$py" ] || py=$(command -v python3)
    if [ ! -x "$dir/bin/python" ]; then
        if ! "$py" -m venv "$dir" 2>/dev/null; then
            rm -rf "$dir"
            echo "==> installing python3-venv (Debian's venv module)" >&2
            apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null
            "$py" -m venv "$dir"
        fi
    fi
    local stamp=$dir/.hal0-installed
    if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
        echo "==> installing the project and its dev tools into $dir" >&2
        "$dir/bin/pip" install --quiet --disable-pip-version-check -e '.[dev]'
        touch "$stamp"
    fi
}
