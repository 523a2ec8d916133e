"""deploy/embed/lemonade-step.sh: the installer as step 5 of 10 of a bash installer like
hal0's (``set -e``, an ERR trap), run for real on a sandbox root with the one-file pyz.

Its soft case, a service that does not come up (exit 3), needs a booted systemd:
tests/e2e/test_failed_start.py runs the same snippet there.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.integration.conftest import Served

REPO = Path(__file__).resolve().parents[2]
SNIPPET = REPO / "deploy/embed/lemonade-step.sh"
# The embedding installer: four steps of its own, Lemonade, then hal0-api (step 10 is
# Lemonade's own last step; the real hal0 installer starts hal0-api inside it).
HOST_INSTALLER = """
set -euo pipefail
trap 'echo "hal0 install: step failed (exit $?); fix it and re-run" >&2' ERR
source "$SNIPPET"
for i in 1 2 3 4; do echo "[$i/10] hal0 step $i"; done
lemonade_step 5 10 "$@"
echo "hal0-api: starting"
"""

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the pyz's cache is root's")


def _host_install(
    pyz: Path, root: Path, *args: str | Path, pin: str | None = None, **env: str
) -> subprocess.CompletedProcess[str]:
    digest = pin or hashlib.sha256(pyz.read_bytes()).hexdigest()
    return subprocess.run(
        ["bash", "-c", HOST_INSTALLER, "hal0-install", *map(str, args)],
        capture_output=True, text=True, check=False, timeout=120,
        env={
            "PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C.UTF-8",
            "SNIPPET": str(SNIPPET), "HAL0_LEMONADE_PYZ": str(pyz),
            "HAL0_LEMONADE_PYZ_SHA256": digest, "HAL0_LEMONADE_ROOT": str(root), **env,
        },
    )  # fmt: skip


def _archive(s: Served) -> list[str | Path]:
    return ["--artifact", s.release.path, "--sha256", s.release.sha256]


def test_numbered_as_steps_5_to_10_then_the_host_goes_on(
    pyz: Path, root: Path, served: Callable[..., Served]
) -> None:
    done = _host_install(pyz, root, *_archive(served()))
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    numbers = [m.group(1) for line in lines if (m := re.match(r"\[(\d+)/10\] ", line))]
    assert numbers == [str(n) for n in range(1, 11)], done.stdout
    assert re.match(r"\[10/10\] Service start +changed", lines[9]), lines[9]
    assert lines[-1] == "hal0-api: starting"
    cli = root / "usr/local/sbin/hal0-lemonade"
    assert cli.read_bytes() == pyz.read_bytes() and cli.stat().st_mode & 0o777 == 0o755
    assert not cli.with_name("hal0-lemonade.new").exists()
    assert (root / "opt/lemonade/.installed-version").read_text().startswith("10.6.0\n")


def test_dev_mode_shows_the_plan_and_changes_nothing(
    pyz: Path, root: Path, served: Callable[..., Served]
) -> None:
    done = _host_install(pyz, root, *_archive(served()), DEV_MODE="1")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Dry run: nothing is changed." in done.stdout
    assert re.search(r"^\[6/10\] Lemonade release +change ", done.stdout, re.MULTILINE)
    assert done.stdout.splitlines()[-1] == "hal0-api: starting"
    assert not any(root.iterdir())


def test_a_pyz_that_is_not_the_pinned_one_stops_the_host_installer(
    pyz: Path, root: Path, served: Callable[..., Served]
) -> None:
    done = _host_install(pyz, root, *_archive(served()), pin="0" * 64)
    assert done.returncode == 1, done.stdout + done.stderr
    assert f"error: {pyz} has SHA-256 " in done.stderr and "nothing installed" in done.stderr
    assert "hal0 install: step failed (exit 1)" in done.stderr
    assert "hal0-api" not in done.stdout
    assert not any(root.iterdir())


def test_a_failed_step_before_the_service_is_hard(
    pyz: Path, root: Path, served: Callable[..., Served]
) -> None:
    s = served()
    done = _host_install(pyz, root, "--artifact", s.release.path, "--sha256", "a" * 64)
    assert done.returncode == 1, done.stdout + done.stderr
    assert re.search(r"^\[6/10\] Lemonade release +failed +SHA-256 mismatch", done.stdout, re.M)
    assert "hint: the archive is corrupt or not the pinned release" in done.stdout + done.stderr
    assert "hal0 install: step failed (exit 1)" in done.stderr
    assert "hal0-api" not in done.stdout
    assert not (root / "opt/lemonade").exists()
