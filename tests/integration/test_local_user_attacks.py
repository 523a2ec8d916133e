"""Another local user (``nobody``) and the operator's own file cannot steer or block root.

Row 6: the install lock used to live in /run/lock, which is world-writable (1777), so any
user could pre-create it and hold its flock (every install, rollback and uninstall then waits
and refuses), or plant a symlink there.  Row 10: ``llamacpp.extra_args`` in the operator file
could move llama-server's listener off loopback.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.integration.conftest import Served, install_args
from tests.support.attacker import NOBODY, Account, run_cli, start_as, traversable_root

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="acting as another uid needs root")

ANYONE = Account(NOBODY, NOBODY)
WAIT = {"HAL0_LEMONADE_LOCK_WAIT": "2"}


def _world_writable_lock_dir(root: Path) -> Path:
    """The sandbox's /run/lock as on a host: 1777, writable by every user."""
    lock_dir = root / "run/lock"
    lock_dir.mkdir(parents=True)
    (root / "run").chmod(0o755)
    lock_dir.chmod(0o1777)
    return lock_dir


def test_another_user_holding_a_lock_in_run_lock_does_not_block_installs(
    served: Callable[..., Served],
) -> None:
    with traversable_root() as root:
        lock_dir = _world_writable_lock_dir(root)
        holder = start_as(ANYONE, f"""
            import fcntl, os, sys, time
            fd = os.open({str(lock_dir / "hal0-lemonade.lock")!r}, os.O_RDWR | os.O_CREAT, 0o644)
            fcntl.flock(fd, fcntl.LOCK_EX)
            print("held", flush=True)
            time.sleep(60)
        """)  # fmt: skip
        try:
            assert holder.stdout is not None and holder.stdout.readline() == "held\n"
            s = served()
            for args in (install_args(root, s), ["rollback", "--root", root, "--json"]):
                done = run_cli(*args, env=WAIT)
                assert "holds" not in done.stdout + done.stderr, done.stdout + done.stderr
            report = json.loads(run_cli(*install_args(root, s), env=WAIT).stdout)
            assert report["ok"] is True
        finally:
            holder.kill()
            holder.wait()


def test_a_symlink_planted_at_the_old_lock_path_is_not_followed(
    served: Callable[..., Served],
) -> None:
    with traversable_root() as root:
        lock_dir = _world_writable_lock_dir(root)
        target = root / "etc/created-by-root"
        (root / "etc").mkdir()
        planter = start_as(ANYONE, f"import os; os.symlink({str(target)!r}, "
                                   f"{str(lock_dir / 'hal0-lemonade.lock')!r})")  # fmt: skip
        assert planter.wait() == 0
        done = run_cli(*install_args(root, served()), env=WAIT)
        assert done.returncode == 0, done.stderr
        assert not target.exists() and not target.is_symlink()


def test_no_other_user_can_create_or_open_the_lock(served: Callable[..., Served]) -> None:
    with traversable_root() as root:
        done = run_cli(*install_args(root, served()))
        assert done.returncode == 0, done.stderr  # the install took the lock: it exists now
        lock = root / "run/hal0-lemonade.lock"
        assert lock.stat().st_uid == 0 and lock.stat().st_mode & 0o777 == 0o600
        attempt = start_as(ANYONE, f"""
            import os
            for path, flags in (({str(lock)!r}, os.O_RDONLY),
                                ({str(root / "run/other.lock")!r}, os.O_RDWR | os.O_CREAT)):
                try:
                    os.close(os.open(path, flags, 0o644))
                except PermissionError:
                    print("denied")
        """)  # fmt: skip
        out, _ = attempt.communicate(timeout=30)
        assert out.split() == ["denied", "denied"]


# --- row 10: the operator file cannot move a listener off loopback -----------------------------


@pytest.mark.parametrize(
    "extra",
    [
        '["--host", "0.0.0.0"]',
        '["--host=0.0.0.0"]',
        '"--no-mmap --port 8080"',
        '["--port=8080"]',
    ],
)
def test_extra_args_that_move_llama_servers_listener_are_refused(
    served: Callable[..., Served], extra: str
) -> None:
    with traversable_root() as root:
        (root / "etc/hal0").mkdir(parents=True)
        (root / "etc/hal0/lemonade.toml").write_text(f"[llamacpp]\nextra_args = {extra}\n")
        done = run_cli(*install_args(root, served()))
    assert done.returncode == 2, done.stdout
    error = json.loads(done.stdout)["error"]
    assert "llamacpp.extra_args may not contain --" in error and "loopback" in error
    assert not (root / "var/lib/hal0").exists()


def test_status_flags_a_listener_flag_that_reached_config_json(
    served: Callable[..., Served],
) -> None:
    """hal0 itself can write config.json (lemond does, via /internal/set)."""
    with traversable_root() as root:
        s = served()
        assert run_cli(*install_args(root, s)).returncode == 0
        config = root / "var/lib/hal0/lemonade/config.json"
        doc = json.loads(config.read_text())
        doc["llamacpp"]["args"] += " --host 0.0.0.0"
        config.write_text(json.dumps(doc))
        done = run_cli("status", "--root", root, "--json")
        checks = {c["name"]: c for c in json.loads(done.stdout)["checks"]}
        assert done.returncode == 1
        assert "llamacpp.args sets --host" in checks["config"]["detail"]
        assert run_cli(*install_args(root, s)).returncode == 0  # the locked args come back
        assert "--host" not in json.loads(config.read_text())["llamacpp"]["args"]
        assert run_cli("status", "--root", root).returncode == 0
