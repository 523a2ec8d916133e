# Sourced by scripts/demo and scripts/test: make .venv (Debian's system python3, the Python the
# installer targets) and install the project with its pinned dev tools.  Idempotent.
set -euo pipefail

ensure_venv() {
    local py=/usr/bin/python3
    [ -x "$py" ] || py=$(command -v python3)
    if [ ! -x .venv/bin/python ]; then
        if ! "$py" -m venv .venv 2>/dev/null; then
            rm -rf .venv
            apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null
            "$py" -m venv .venv
        fi
    fi
    local stamp=.venv/.hal0-installed
    if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
        .venv/bin/pip install --quiet --disable-pip-version-check -e '.[dev]'
        touch "$stamp"
    fi
}
