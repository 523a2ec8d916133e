"""The accounts repair's other branches: a lock a live command holds, a lock whose pid was
reused or is missing, a name without its shadow line that no lock explains (then a power cut),
a dry run.  (The rollback itself is proven in test_useradd_kills.py.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from hal0_lemonade import accountsdb
from hal0_lemonade.accountsdb import FIXERS
from hal0_lemonade.errors import LockError
from tests.faults.scenarios import content, copy_tree, run_installer
from tests.powerloss.checks import accounts, check_accounts
from tests.powerloss.disk import disk_from, make_image
from tests.support.archives import Release, build_release

pytestmark = [
    pytest.mark.powerloss,
    pytest.mark.skipif(os.geteuid() != 0, reason="useradd --prefix and chown need root"),
]


@dataclass(frozen=True)
class Converged:
    release: Release
    ref: Path  # a root after an uninterrupted fresh install

    def args(self, root: Path, *extra: str) -> list[str]:
        return [
            "install", "--root", str(root), "--artifact", str(self.release.path),
            "--sha256", self.release.sha256, "--json", *extra,
        ]  # fmt: skip


@pytest.fixture(scope="module")
def converged(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Converged]:
    work = tmp_path_factory.mktemp("repair")
    release = build_release(work / "releases", "10.6.0")
    ref = work / "ref"
    ref.mkdir()
    world = Converged(release, ref)
    done = run_installer(world.args(ref))
    assert done.returncode == 0, done.stdout + done.stderr
    yield world


def _install(world: Converged, root: Path, *extra: str) -> tuple[int, dict[str, Any]]:
    done = run_installer(world.args(root, *extra))
    report: dict[str, Any] = json.loads(done.stdout) if done.stdout.startswith("{") else {}
    return done.returncode, report


def _without(path: Path, name: str) -> None:
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(line for line in lines if not line.startswith(f"{name}:")))


@pytest.mark.parametrize(
    ("name", "found"),
    [
        ("gshadow+", ("gshadow", "+")),
        ("passwd.lock", ("passwd", "lock")),
        ("shadow.11651", ("shadow", "11651")),
        ("group.cioAb12Z9", ("group", "cio")),
        (".passwd.tmp-0123abcd", ("passwd", "tmp")),
        ("passwd-", None),  # the backup: kept
        ("gshadow", None),
        ("shadow.\u0661\u0662", None),  # digits, but not ASCII ones
        ("group.cio1", None),
        (".pwd.lock", None),  # lckpwdf's: permanent
        (".passwd.tmp-0123ABCD", None),
        ("subuid.lock", None),
    ],
)
def test_the_leftover_names(name: str, found: tuple[str, str] | None) -> None:
    assert accountsdb.leftover(name) == found


def test_a_sound_database_needs_no_repair(converged: Converged) -> None:
    assert accountsdb.diagnose(converged.ref / "etc") is None


def test_a_lock_a_running_command_holds_is_waited_for_not_broken(
    converged: Converged, tmp_path: Path
) -> None:
    root = copy_tree(converged.ref, tmp_path / "root")
    holder = subprocess.Popen(["sleep", "60"])
    try:
        time.sleep(0.05)  # the lock is written after its holder started, as in shadow-utils
        (root / "etc/gshadow.lock").write_bytes(f"{holder.pid}\0".encode())
        code, report = _install(converged, root)
        assert code == 1
        assert f"belongs to process {holder.pid}" in report["error"], report
        assert (root / "etc/gshadow.lock").exists(), "a live holder's lock was broken"
    finally:
        holder.kill()
        holder.wait()
    code, _ = _install(converged, root)
    assert code == 0
    assert content(root) == content(converged.ref)


@pytest.mark.parametrize(
    "kind", ["pid reused after a reboot", "no pid", "pid 0", "a pid past pid_max"]
)
def test_a_stale_lock_is_removed(converged: Converged, tmp_path: Path, kind: str) -> None:
    root = copy_tree(converged.ref, tmp_path / "root")
    lock = root / "etc/passwd.lock"
    if kind == "no pid":
        lock.write_bytes(b"")
    elif kind == "pid 0":
        lock.write_bytes(b"0\0")
    elif kind == "a pid past pid_max":
        lock.write_bytes(b"99999999999999999999\0")
    else:
        # A live pid (this very process) that started after the lock was written.
        lock.write_bytes(f"{os.getpid()}\0".encode())
        day_ago = time.time() - 86_400
        os.utime(lock, (day_ago, day_ago))
    code, report = _install(converged, root)
    assert code == 0, report
    assert "repaired the accounts database" in json.dumps(report)
    assert content(root) == content(converged.ref)


@pytest.mark.parametrize("shadow", ["shadow", "gshadow"])
def test_a_name_without_its_shadow_line_gets_one_durably(
    converged: Converged, power: Path, tmp_path: Path, shadow: str
) -> None:
    """No lock explains it (an older installer's cut, a later command that took the stale
    locks): pwconv / grpconv give the name a (locked) shadow line, and a cut keeps it."""
    work = tmp_path / "image"
    work.mkdir()
    damaged = copy_tree(converged.ref, tmp_path / "damaged")
    _without(damaged / "etc" / shadow, "hal0")
    with disk_from(make_image(work / "disk.img", damaged, work), tmp_path) as disk:
        root = disk.root
        code, report = _install(converged, root)
        assert code == 0, report

        disk.cut(f"{FIXERS[shadow]} run")

        fixed = (root / "etc" / shadow).read_text().splitlines()
        hal0 = [line.split(":")[:2] for line in fixed if line.startswith("hal0:")]
        assert hal0 == [["hal0", "x"]], f"the {shadow} line is gone after the cut"
        (root / "etc/.pwd.lock").unlink()  # pwconv --root's lckpwdf file in the sandbox
        check_accounts(root, accounts(root), accounts(root))
        code, report = _install(converged, root)
        assert (code, report["changed"]) == (0, False), "the repair did not hold"


def test_a_dry_run_shows_the_repair_and_changes_nothing(
    converged: Converged, tmp_path: Path
) -> None:
    root = copy_tree(converged.ref, tmp_path / "root")
    (root / "etc/shadow+").write_text("hal0:!:1::::::\n")
    before = content(root)
    done = run_installer(["install", "--dry-run", *converged.args(root)[1:]])
    assert done.returncode == 0, done.stderr
    assert "repair the accounts database: remove /etc/shadow+" in done.stdout
    assert content(root) == before


def test_the_host_repair_waits_for_lckpwdf_then_refuses(tmp_path: Path) -> None:
    """On the host root the repair holds glibc's lckpwdf lock (a write lock on /etc/.pwd.lock),
    which every host shadow-utils command takes first: another holder makes it wait, then
    refuse."""
    etc = tmp_path / "etc"
    etc.mkdir()
    take = (
        "import fcntl, os, sys, time\n"
        "fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT, 0o600)\n"
        "fcntl.lockf(fd, fcntl.LOCK_EX)\n"
        "print('held', flush=True)\n"
        "time.sleep(60)\n"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", take, str(etc / ".pwd.lock")], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline() == "held\n"
        started = time.monotonic()
        with (
            pytest.raises(LockError, match="held by another process"),
            accountsdb.pwd_lock(etc, take=True, wait=0.3),
        ):
            pass
        assert time.monotonic() - started >= 0.3
    finally:
        holder.kill()
        holder.wait()
    with accountsdb.pwd_lock(etc, take=True, wait=0.3):
        pass  # free again
