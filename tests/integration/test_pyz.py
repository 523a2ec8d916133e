"""``dist/hal0-lemonade.pyz``: one file, reproducible, run by the system's own Python.

Built by scripts/pyz (the wheels it bundles are fetched from PyPI once, pinned by digest, and
cached in .cache/pyz-wheels).  Runs with each CPython 3.11-3.13 this machine has, the way a
host runs it: ``python3 hal0-lemonade.pyz ...``, no venv, no pip.  Its compiled cache lives in
/var/cache/hal0-lemonade-pyz, where root's first changing command puts it (a dry run or a
reading command writes nothing); one another user could write to is never imported from.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
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


def _cache_of(pyz: Path, python: str) -> Path:
    """Where this build unpacks itself for ``python`` (its name: the build, python, machine)."""
    with zipfile.ZipFile(pyz) as archive:
        main = archive.read("__main__.py").decode()
    build = re.search(r'^BUILD = "([0-9a-f]+)"', main, re.MULTILINE)
    assert build is not None, "no BUILD in the pyz's __main__"
    tag = subprocess.run(
        [python, "-c", "import platform, sys; print(f'cp{sys.version_info[0]}"
         "{sys.version_info[1]}-{platform.machine()}')"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    return CACHE / f"{build.group(1)}-{tag}"


@pytest.mark.parametrize("minor", sorted(PYTHONS))
def test_it_installs_and_converges_on_the_system_python(
    pyz: Path, served: Callable[..., Served], minor: str
) -> None:
    python = PYTHONS[minor]
    with traversable_root() as root:
        s = served()
        first = _run(python, pyz, *install_args(root, s))
        assert first.returncode == 0, first.stderr
        assert json.loads(first.stdout)["changed"] is True
        assert (_cache_of(pyz, python) / ".complete").is_file()  # the install unpacked it
        again = _run(python, pyz, *install_args(root, s))
        assert json.loads(again.stdout)["changed"] is False
        assert _run(python, pyz, "status", "--root", root).returncode == 0
    version = _run(python, pyz, "--version")
    assert version.returncode == 0, version.stderr
    assert "(inflate: zlib-ng " in version.stdout  # a wheel exists for x86_64 3.11-3.13


@pytest.fixture
def fresh_cache(pyz: Path) -> Iterator[Path]:
    """The pyz's cache for Debian's python3, removed before and after the test."""
    tag = _cache_of(pyz, "/usr/bin/python3")
    shutil.rmtree(tag, ignore_errors=True)
    yield tag
    shutil.rmtree(tag, ignore_errors=True)


def test_commands_that_change_nothing_write_no_cache(
    pyz: Path, fresh_cache: Path, served: Callable[..., Served]
) -> None:
    """A dry run, status, --help and --version run from the zip: nothing is written, not even
    the cache; the first real install makes it."""
    with traversable_root() as root:
        s = served()
        for args in (
            [*install_args(root, s), "--dry-run"],
            [*install_args(root, s), "--dev"],
            ["install", "--help"],
            ["status", "--root", root],
            ["--version"],
        ):
            done = _run("/usr/bin/python3", pyz, *args)
            assert done.returncode in (0, 1), done.stderr  # status of an empty root: 1
            assert not fresh_cache.exists(), args
        assert not any(root.iterdir())
        assert _run("/usr/bin/python3", pyz, *install_args(root, s)).returncode == 0
        assert (fresh_cache / ".complete").is_file()


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
