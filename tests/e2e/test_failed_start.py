"""A fresh booted host: dry-run first (nothing may change), then a release that cannot start."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from tests.e2e.conftest import E2E
from tests.e2e.expect import assert_marker, assert_result_shape, steps_by_status
from tests.e2e.harness import (
    CONFIG,
    EMBED,
    LIVE,
    PYZ,
    UNIT,
    UNIT_FILE,
    Container,
    diff_snapshots,
)

pytestmark = pytest.mark.e2e

# Everything an install could touch on a fresh host, account files included.
WATCHED = ("/etc", "/opt", "/var/lib/hal0", "/var/cache", "/usr/local", "/run/systemd/system")
JOURNAL_HINT = f"journalctl -u {UNIT}"


@pytest.fixture(scope="module")
def fresh(e2e: E2E) -> Iterator[Container]:
    with e2e.boot() as booted:
        yield booted


def test_dry_run_on_a_fresh_host_changes_nothing(fresh: Container, e2e: E2E) -> None:
    before = fresh.snapshot(*WATCHED)
    result = fresh.install(*e2e.releases.args(e2e.releases.base), "--dry-run")
    after = fresh.snapshot(*WATCHED)
    assert_result_shape(result)
    assert result["ok"] is True, result
    assert diff_snapshots(before, after) == []
    assert fresh.run(["id", "hal0"], check=False).returncode != 0, "dry-run created hal0"
    assert fresh.show("LoadState") == "not-found"
    assert fresh.run(["ss", "-H", "-ltn", "sport", "= :13305"]).stdout.strip() == ""


def test_no_start_is_reported_as_deliberate(fresh: Container, e2e: E2E) -> None:
    """--no-start installs the files only; status says the service is off on purpose (n/a,
    exit 0) instead of failing on enabled, active and healthy."""
    result = fresh.install(*e2e.releases.args(e2e.releases.base), "--no-start")
    service = next(s for s in result["steps"] if s["name"] == "Service start")
    assert service["status"] == "changed", service
    assert service["detail"].startswith("--no-start: service not enabled or started"), service
    assert fresh.exists(UNIT_FILE)
    assert fresh.systemctl("is-enabled", UNIT, check=False).stdout.strip() == "disabled"
    assert fresh.show("ActiveState") == "inactive"
    report = fresh.status(expect_rc=0)
    held = {c["name"]: c for c in report["checks"] if c["ok"] is None}
    assert sorted(held) == ["active", "enabled", "healthy"], report
    for check in held.values():
        assert "installed with --no-start" in check["detail"], check
    assert fresh.exists("/opt/lemonade.releases/no-start")


def test_release_whose_daemon_cannot_start(fresh: Container, e2e: E2E) -> None:
    broken = e2e.releases.broken
    result = fresh.install(*e2e.releases.args(broken), expect_rc=3)
    assert_result_shape(result)
    assert result["ok"] is False
    assert result["error"], result
    failed = steps_by_status(result).get("failed", [])
    assert len(failed) == 1, result
    step = next(s for s in result["steps"] if s["status"] == "failed")
    assert any(word in step["name"].lower() for word in ("service", "start")), step
    assert fresh.last is not None
    assert JOURNAL_HINT in fresh.last.stdout + fresh.last.stderr, fresh.last

    # Everything before the start stays in place for the operator to inspect and retry.
    assert_marker(fresh, broken)
    for path in (f"{LIVE}/lemond", f"{LIVE}/resources/defaults.json", UNIT_FILE, CONFIG):
        assert fresh.exists(path), path
    assert fresh.run(["id", "-u", "hal0"], check=False).returncode == 0
    assert fresh.systemctl("is-enabled", UNIT, check=False).stdout.strip() == "enabled"
    assert not fresh.exists("/opt/lemonade.releases/no-start")  # started now: no record
    assert fresh.status(expect_rc=1)["ok"] is False
    # The hint leads somewhere: the journal holds the daemon's own reason.
    assert "FAIL_AT_START" in fresh.journal()


def test_embedded_in_a_bash_installer_a_dead_service_is_soft(fresh: Container, e2e: E2E) -> None:
    """hal0's install.sh runs deploy/embed/lemonade-step.sh as step 5 of 10 under set -e: a
    service that does not come up (exit 3) is a warning, and the host installer goes on."""
    script = (
        "set -euo pipefail; trap 'echo step failed >&2' ERR; "
        f"source {EMBED}; lemonade_step 5 10 \"$@\"; echo 'hal0-api: starting'"
    )
    done = fresh.run(
        ["env", f"HAL0_LEMONADE_PYZ={PYZ}", f"HAL0_LEMONADE_PYZ_SHA256={e2e.pyz_sha256}",
         "bash", "-c", script, "hal0-install", *e2e.releases.args(e2e.releases.broken)],
        check=False, timeout=180,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert re.search(r"^\[10/10\] Service start +failed ", done.stdout, re.MULTILINE), done.stdout
    assert "warning: Lemonade is installed but hal0-lemonade.service is not healthy" in (
        done.stderr
    )
    assert "step failed" not in done.stderr
    assert done.stdout.splitlines()[-1] == "hal0-api: starting"
