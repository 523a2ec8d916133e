"""The generated unit passes systemd's own checks (offline: no booted systemd needed)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from hal0_lemonade.resources import unit
from tests.integration.conftest import CLI, Served

UNIT = "hal0-lemonade.service"
MAX_EXPOSURE = 3.5

needs_analyze = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed"
)


def _with_system_units(root: Path) -> None:
    # `verify --root` resolves the unit's dependencies (sysinit.target, ...) inside the root.
    shutil.copytree("/usr/lib/systemd/system", root / "usr/lib/systemd/system", symlinks=True)


@needs_analyze
def test_generated_unit_verifies_without_any_message(
    installed: tuple[Path, Served],
) -> None:
    root, _ = installed
    _with_system_units(root)
    done = subprocess.run(
        ["systemd-analyze", "verify", f"--root={root}", UNIT],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stderr == "" and done.stdout == ""


@needs_analyze
def test_verify_would_catch_a_bad_unit(installed: tuple[Path, Served]) -> None:
    """The check above can fail: a typo in the unit shows up on stderr."""
    root, _ = installed
    _with_system_units(root)
    path = root / "etc/systemd/system" / UNIT
    path.write_text(path.read_text().replace("Restart=on-failure", "Restartt=on-failure"))
    done = subprocess.run(
        ["systemd-analyze", "verify", f"--root={root}", UNIT],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert "Restartt" in done.stderr


@needs_analyze
def test_exposure_score_is_at_most_3_5(tmp_path: Path) -> None:
    path = tmp_path / UNIT
    path.write_bytes(unit.render(host="127.0.0.1", port=13305, cpus=8))
    text = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", str(path)],
        capture_output=True, text=True, check=False,
    ).stdout  # fmt: skip
    overall = float(text.rsplit("Overall exposure level for", 1)[1].split(":")[1].split()[0])
    assert overall <= MAX_EXPOSURE, text
    threshold = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", f"--threshold={int(MAX_EXPOSURE * 10)}",
         str(path)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert threshold.returncode == 0


def test_cpu_quota_is_80_percent_of_the_machine() -> None:
    text = unit.render(host="127.0.0.1", port=13305, cpus=16).decode()
    assert "CPUQuota=1280%" in text
    assert "http://127.0.0.1:13305/internal/shutdown" in text
    assert "LimitMEMLOCK=infinity" in text


def test_status_reports_the_sandbox_install(cli: CLI, installed: tuple[Path, Served]) -> None:
    root, _ = installed
    run = cli("status", "--root", root, "--json")
    assert run.code == 0, run.out
    checks = {c["name"]: c for c in run.json["checks"]}
    assert checks["release"]["ok"] and checks["config"]["ok"] and checks["unit"]["ok"]
    assert checks["active"]["ok"] is None  # no systemd under a temp root

    config = root / "var/lib/hal0/lemonade/config.json"
    doc = json.loads(config.read_text())
    doc["llamacpp"]["args"] = "--parallel 1"
    config.write_text(json.dumps(doc))
    run = cli("status", "--root", root)
    assert run.code == 1
    assert "FAIL config" in run.out and "lacks --threads" in run.out
