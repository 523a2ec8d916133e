"""One install at a time per root: a second waits a bounded time, then refuses clearly."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.integration.conftest import CLI, Served, install_args, snapshot
from tests.support.httpserver import HTTPTestServer, Trickle

LOCK = "run/hal0-lemonade.lock"


pytestmark = pytest.mark.usefixtures("join_server_threads")


@contextmanager
def holding_lock(root: Path) -> Iterator[int]:
    """Take the installer's flock the way another installer would (its own open file)."""
    path = root / LOCK
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        yield fd
    finally:
        os.close(fd)


def test_a_second_install_waits_then_refuses_and_changes_nothing(
    cli: CLI, installed: tuple[Path, Served], served: Callable[..., Served]
) -> None:
    root, _ = installed
    newer = served("10.6.1")
    before = snapshot(root, dir_mtimes=False)
    with holding_lock(root):
        started = time.monotonic()
        run = cli(*install_args(root, newer), env={"HAL0_LEMONADE_LOCK_WAIT": "0.5"})
        waited = time.monotonic() - started
    assert run.code == 1
    assert run.json["error"].startswith(
        "another hal0-lemonade run holds /run/hal0-lemonade.lock (waited 0.5 s)"
    )
    assert "hint:" in run.json["error"]
    assert 0.5 <= waited < 3
    assert snapshot(root, dir_mtimes=False) == before


def test_a_second_install_goes_ahead_once_the_first_lets_go(
    cli: CLI, installed: tuple[Path, Served], served: Callable[..., Served]
) -> None:
    root, _ = installed
    newer = served("10.6.1")
    with holding_lock(root) as fd:
        release = threading.Timer(0.4, fcntl.flock, (fd, fcntl.LOCK_UN))
        release.start()
        started = time.monotonic()
        run = cli(*install_args(root, newer), env={"HAL0_LEMONADE_LOCK_WAIT": "10"})
        waited = time.monotonic() - started
        release.join()
    assert run.code == 0, run.out
    assert waited >= 0.4
    assert (root / "opt/lemonade/.installed-version").read_text().startswith("10.6.1")


def test_two_real_installs_never_interleave(
    cli: CLI, root: Path, served: Callable[..., Served], http_server: HTTPTestServer
) -> None:
    """A slow install in another process holds the lock; one started meanwhile refuses."""
    s = served(padding_bytes=400_000)
    http_server.set_fault(f"/dl/{s.release.name}", Trickle(chunk=40_000, interval=0.1, times=1))
    env = {**os.environ, "HAL0_LEMONADE_LOCK_WAIT": "0"}
    first = subprocess.Popen(
        [sys.executable, "-m", "hal0_lemonade", *map(str, install_args(root, s, "--no-start"))],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    try:
        part = root / f"var/cache/hal0-lemonade/{s.release.sha256}.tar.gz.part"
        deadline = time.monotonic() + 10
        while not part.exists():  # the first install is downloading, so it holds the lock
            assert time.monotonic() < deadline and first.poll() is None, "first run did not start"
            time.sleep(0.02)
        second = cli(*install_args(root, s, "--no-start"), env={"HAL0_LEMONADE_LOCK_WAIT": "0.2"})
        assert first.poll() is None, "the first run must still be busy for this test to mean much"
    finally:
        out, err = first.communicate(timeout=30)
    assert second.code == 1
    assert "another hal0-lemonade run holds" in second.json["error"]
    assert first.returncode == 0, err
    assert '"ok": true' in out
    assert (root / "opt/lemonade/.installed-version").read_text().startswith("10.6.0")


def test_a_bad_lock_wait_is_a_usage_error(
    cli: CLI, root: Path, served: Callable[..., Served]
) -> None:
    run = cli(*install_args(root, served()), env={"HAL0_LEMONADE_LOCK_WAIT": "soon"})
    assert run.code == 2
    assert "HAL0_LEMONADE_LOCK_WAIT='soon' is not a number of seconds" in run.out
    assert not (root / "opt").exists()


def test_rollback_takes_the_same_lock(cli: CLI, installed: tuple[Path, Served]) -> None:
    root, _ = installed
    with holding_lock(root):
        run = cli("rollback", "--root", root, "--json", env={"HAL0_LEMONADE_LOCK_WAIT": "0.2"})
    assert run.code == 1
    assert "another hal0-lemonade run holds" in run.json["error"]
