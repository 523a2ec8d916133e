"""Reboot: a writable view of the root, booted twice (volatile boots forget everything)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import E2E
from tests.e2e.expect import assert_marker
from tests.e2e.harness import SHUTDOWN_LOG, UNIT, writable_overlay

pytestmark = pytest.mark.e2e


@pytest.fixture
def writable_root(e2e: E2E) -> Iterator[Path]:
    with writable_overlay(e2e.rootfs, e2e.workdir) as root:
        yield root


def test_enabled_service_comes_back_after_reboot(e2e: E2E, writable_root: Path) -> None:
    with e2e.boot(writable_root, volatile=False) as first:
        first.install(*e2e.releases.args(e2e.releases.base))
        first_pid = first.wait_healthy()["pid"]
    # The clean poweroff stopped the unit through ExecStop.
    with e2e.boot(writable_root, volatile=False) as second:
        second.wait_for(
            f"{UNIT} to be active after boot",
            lambda: second.show("ActiveState") == "active",
            timeout=30,
        )
        assert second.systemctl("is-enabled", UNIT, check=False).stdout.strip() == "enabled"
        health = second.wait_healthy()
        assert health["version"] == e2e.releases.base.version
        assert health["pid"] == second.main_pid()
        assert health["uid"] == int(second.out(["id", "-u", "hal0"]))
        assert_marker(second, e2e.releases.base)
        assert second.status(expect_rc=0)["ok"] is True
        drains = second.read(SHUTDOWN_LOG).splitlines()
        assert len(drains) == 1, f"the first boot's poweroff drained {drains} (pid {first_pid})"
        assert drains[0].endswith("POST /internal/shutdown 200"), drains
