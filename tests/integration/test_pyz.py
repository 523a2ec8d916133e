"""``dist/hal0-lemonade.pyz``: one file, reproducible, run by the system's own Python.

Built by scripts/pyz (the wheels it bundles are fetched from PyPI once, pinned by digest, and
cached in .cache/pyz-wheels).  Runs with each CPython 3.11-3.13 this machine has, the way a
host runs it: ``python3 hal0-lemonade.pyz ...``, no venv, no pip.  Its compiled cache lives in
/var/cache/hal0-lemonade/pyz, where root puts it; one another user could write to is never
imported from.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import Served, install_args
from tests.support.attacker import NOBODY, traversable_root

REPO = Path(__file__).resolve().parents[2]
CACHE = Path("/var/cache/hal0-lemonade-pyz")
PYTHONS = {
    "3.11": "/usr/bin/python3",
    **{
        minor: str(found)
        for minor in ("3.12", "3.13")
        for found in sorted(Path.home().glob(f".pyenv/versions/{minor}.*/bin/python{minor}"))[-1:]
    },
}

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the pyz's cache is root's")


@pytest.fixture(scope="module")
def pyz() -> Path:
    done = subprocess.run(
        ["bash", "scripts/pyz"], cwd=REPO, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    return REPO / "dist/hal0-lemonade.pyz"


def _run(
    python: str, pyz: Path, *args: str | Path, user: int | None = None
) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C.UTF-8"}
    return subprocess.run(
        [python, str(pyz), *map(str, args)], capture_output=True, text=True, check=False,
        env=env, timeout=120, user=user, group=user,
    )  # fmt: skip


def test_two_builds_are_byte_identical(pyz: Path, tmp_path: Path) -> None:
    first = hashlib.sha256(pyz.read_bytes()).hexdigest()
    again = subprocess.run(
        [sys.executable, "scripts/build_pyz.py", ".cache/pyz-wheels", tmp_path / "again.pyz"],
        cwd=REPO, capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert again.stdout.split()[0] == first
    assert pyz.read_bytes()[:23] == b"#!/usr/bin/env python3\n"
    assert pyz.stat().st_mode & 0o111


@pytest.mark.parametrize("minor", sorted(PYTHONS))
def test_it_installs_and_converges_on_the_system_python(
    pyz: Path, served: Callable[..., Served], minor: str
) -> None:
    python = PYTHONS[minor]
    version = _run(python, pyz, "--version")
    assert version.returncode == 0, version.stderr
    assert "(inflate: zlib-ng " in version.stdout  # a wheel exists for x86_64 3.11-3.13
    with traversable_root() as root:
        s = served()
        first = _run(python, pyz, *install_args(root, s))
        assert first.returncode == 0, first.stderr
        assert json.loads(first.stdout)["changed"] is True
        again = _run(python, pyz, *install_args(root, s))
        assert json.loads(again.stdout)["changed"] is False
        assert _run(python, pyz, "status", "--root", root).returncode == 0


@pytest.fixture
def fresh_cache(pyz: Path) -> Iterator[Path]:
    """The pyz's cache for this interpreter, removed before and after the test."""
    version = _run("/usr/bin/python3", pyz, "--version")  # makes it, to learn its name
    assert version.returncode == 0
    tags = sorted(CACHE.glob("*-cp311-*"), key=lambda p: p.stat().st_mtime)
    tag = tags[-1]
    shutil.rmtree(tag)
    yield tag
    shutil.rmtree(tag, ignore_errors=True)


def test_a_cache_another_user_could_write_is_never_imported_from(
    pyz: Path, fresh_cache: Path, tmp_path: Path
) -> None:
    """Another user plants code where the pyz would unpack itself; root runs the pyz."""
    planted = tmp_path / "planted-ran"
    fresh_cache.mkdir(mode=0o777)
    fresh_cache.chmod(0o777)  # writable by everyone: not root's alone
    (fresh_cache / "hal0_lemonade").mkdir()
    (fresh_cache / "hal0_lemonade/__init__.py").write_text(
        f"open({str(planted)!r}, 'w').write('pwned')\n"
    )
    (fresh_cache / ".complete").write_text("forged\n")
    done = _run("/usr/bin/python3", pyz, "--version")
    assert done.returncode == 0, done.stderr
    assert not planted.exists()  # the planted package was not imported
    assert "(inflate: zlib " in done.stdout  # ran from the zip itself: the stdlib's zlib


def test_as_another_user_it_runs_from_the_zip(pyz: Path, fresh_cache: Path) -> None:
    readable = Path(tempfile.gettempdir()) / f"hal0-lemonade-{os.getpid()}.pyz"
    shutil.copyfile(pyz, readable)
    readable.chmod(0o755)
    try:
        done = _run("/usr/bin/python3", readable, "--version", user=NOBODY)
    finally:
        readable.unlink()
    assert done.returncode == 0, done.stderr
    assert "version 0.1.0 (inflate: zlib " in done.stdout
    assert not fresh_cache.exists()  # only root makes the cache
