"""A full disk and a read-only target: one clear error, nothing half-done, the old release live.

The target root is a small tmpfs mounted for the test (needs root; skipped otherwise), so the
kernel itself says ENOSPC or EROFS -- nothing is simulated.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import CLI, Served, install_args, snapshot

pytestmark = pytest.mark.usefixtures("join_server_threads")


Mount = Callable[[str], Path]


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Mount]:
    """``tmpfs("4m")`` mounts a tmpfs of that size at a fresh dir; unmounted afterwards."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mounted: list[Path] = []

    def mount(size: str) -> Path:
        target = tmp_path / f"root-{len(mounted)}"
        target.mkdir()
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(target)],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
        mounted.append(target)
        return target

    try:
        yield mount
    finally:
        for target in reversed(mounted):
            if subprocess.run(["umount", str(target)], check=False).returncode != 0:
                subprocess.run(["umount", "-l", str(target)], check=False)


def _remount_ro(target: Path) -> None:
    subprocess.run(["mount", "-o", "remount,ro", str(target)], check=True)


def _live_version(root: Path) -> str:
    return (root / "opt/lemonade/.installed-version").read_text().splitlines()[0]


def test_a_full_disk_fails_cleanly_and_keeps_the_old_release(
    cli: CLI, tmpfs: Mount, served: Callable[..., Served]
) -> None:
    root = tmpfs("3m")
    old = served()
    assert cli(*install_args(root, old)).code == 0
    big = served("10.6.1", padding_bytes=6_000_000)  # incompressible: cannot fit in 3 MB
    before = snapshot(root, dir_mtimes=False)

    run = cli(*install_args(root, big))

    assert run.code == 1
    error = run.json["error"]
    assert error.startswith("[Lemonade release] No space left on device"), error
    assert "free disk space" in error
    # stderr may hold the loopback server's own broken-pipe traceback (the client hung up
    # mid-body, as it should); none may come from the installer.
    assert "hal0_lemonade/" not in run.err
    assert snapshot(root, dir_mtimes=False) == before, "no staging dir or partial download left"
    assert _live_version(root) == "10.6.0"
    # Space was given back: the same disk still takes a re-run of what is installed.
    again = cli(*install_args(root, old))
    assert again.code == 0 and again.json["changed"] is False


def test_a_read_only_target_fails_cleanly_and_keeps_the_old_release(
    cli: CLI, tmpfs: Mount, served: Callable[..., Served]
) -> None:
    root = tmpfs("16m")
    old = served()
    assert cli(*install_args(root, old)).code == 0
    _remount_ro(root)
    before = snapshot(root)

    run = cli(*install_args(root, served("10.6.1")))

    assert run.code == 1
    error = run.json["error"]
    assert error.startswith("[Lemonade release] Read-only file system"), error
    assert "remount it read-write" in error
    assert "Traceback" not in run.err
    assert snapshot(root) == before
    assert _live_version(root) == "10.6.0"


def test_a_converged_read_only_target_needs_no_writes(
    cli: CLI, tmpfs: Mount, served: Callable[..., Served]
) -> None:
    """Nothing to change means nothing to write, not even the lock file."""
    root = tmpfs("16m")
    old = served()
    assert cli(*install_args(root, old)).code == 0
    _remount_ro(root)
    run = cli(*install_args(root, old))
    assert run.code == 0, run.out
    assert run.json["changed"] is False


def test_an_empty_read_only_target_gives_one_clear_line(
    cli: CLI, tmpfs: Mount, served: Callable[..., Served]
) -> None:
    root = tmpfs("1m")
    _remount_ro(root)
    run = cli(*install_args(root, served())[:-1])  # human output
    assert run.code == 1
    assert run.err.startswith("error: [Install lock] Read-only file system")
    assert "hint: the target filesystem is read-only" in run.err
    assert "Traceback" not in run.err
    assert list(root.iterdir()) == []


def test_rollback_on_a_read_only_target_gives_one_clear_line(
    cli: CLI, tmpfs: Mount, served: Callable[..., Served]
) -> None:
    root = tmpfs("16m")
    assert cli(*install_args(root, served())).code == 0
    assert cli(*install_args(root, served("10.6.1"))).code == 0
    _remount_ro(root)
    before = snapshot(root)
    run = cli("rollback", "--root", root, "--json")
    assert run.code == 1
    assert "Read-only file system" in run.json["error"]
    assert snapshot(root) == before
    assert _live_version(root) == "10.6.1"
