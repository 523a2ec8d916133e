"""Fixtures for driving the real CLI against temp roots and loopback HTTP."""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from hal0_lemonade.cli import main
from tests.support.archives import Release, ReleaseFactory
from tests.support.attacker import Account, run_cli, sandbox_account, traversable_root
from tests.support.httpserver import HTTPTestServer


def wait_for_new_threads(before: set[threading.Thread], timeout: float = 10.0) -> None:
    """Wait until every thread started since ``before`` has ended.

    Polls ``is_alive`` instead of joining: a handler thread can be listed by
    ``threading.enumerate`` before it has started, and joining it then raises.
    """
    deadline = time.monotonic() + timeout
    for thread in set(threading.enumerate()) - before:
        while thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.01)


@pytest.fixture
def join_server_threads() -> Iterator[None]:
    """Let the loopback servers' handler threads (stalled, cut off, refused) finish inside the
    test that started them, so a traceback they print cannot land in a later test's stderr.
    Modules that need it: ``pytestmark = pytest.mark.usefixtures("join_server_threads")``."""
    before = set(threading.enumerate())
    yield
    wait_for_new_threads(before)


@dataclass
class Run:
    code: int
    out: str
    err: str

    @property
    def json(self) -> dict[str, Any]:
        doc: dict[str, Any] = json.loads(self.out)
        return doc

    def step(self, name: str) -> dict[str, Any]:
        for step in self.json["steps"]:
            if step["name"] == name:
                return dict(step)
        raise KeyError(name)


CLI = Callable[..., Run]


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> CLI:
    """Run ``hal0-lemonade ARGS`` in-process; returns exit code and captured output."""
    monkeypatch.delenv("HAL0_SKIP_LEMONADE_SHA", raising=False)

    def run(*args: str | Path, env: dict[str, str] | None = None) -> Run:
        capsys.readouterr()
        with monkeypatch.context() as m:
            for key, value in (env or {}).items():
                m.setenv(key, value)
            code = main([str(a) for a in args])
        captured = capsys.readouterr()
        return Run(code, captured.out, captured.err)

    return run


@pytest.fixture
def root(tmp_path: Path) -> Path:
    target = tmp_path / "root"
    target.mkdir()
    return target


@dataclass
class Served:
    release: Release
    url: str


@pytest.fixture
def served(http_server: HTTPTestServer, release_factory: ReleaseFactory) -> Callable[..., Served]:
    def serve(version: str = "10.6.0", **options: Any) -> Served:
        release = release_factory(version, **options)
        url = http_server.add(f"/dl/{release.name}", release.path)
        return Served(release, url)

    return serve


def install_args(root: Path, served: Served, *extra: str) -> list[str | Path]:
    s = served
    return [
        "install", "--root", root, "--version", s.release.version,
        "--artifact", s.url, "--sha256", s.release.sha256, "--json", *extra,
    ]  # fmt: skip


Snapshot = dict[str, tuple[int, int, int, bytes | str | None]]


def snapshot(root: Path, *, dir_mtimes: bool = True) -> Snapshot:
    """inode, mtime_ns, mode and content (or link target) of everything under ``root``.

    ``dir_mtimes=False`` ignores directory mtimes: a refused install still creates and
    removes its staging dir beside the live tree, which touches the parent's mtime only.
    """
    snap: Snapshot = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath, name)
            st = path.lstat()
            if path.is_symlink():
                content: bytes | str | None = str(path.readlink())
            elif path.is_file():
                content = path.read_bytes()
            else:
                content = None
            mtime = st.st_mtime_ns if dir_mtimes or not path.is_dir() else 0
            snap[str(path.relative_to(root))] = (st.st_ino, mtime, st.st_mode, content)
    return snap


@pytest.fixture
def installed(cli: CLI, root: Path, served: Callable[..., Served]) -> Iterator[tuple[Path, Served]]:
    """A root with 10.6.0 installed (files only; no systemd runs under a temp root)."""
    s = served()
    run = cli(*install_args(root, s))
    assert run.code == 0, run.err
    yield root, s


@pytest.fixture
def hal0_sandbox(served: Callable[..., Served]) -> Iterator[tuple[Path, Served, Account]]:
    """A sandbox root other users can traverse, with 10.6.0 installed by the installer run as
    a child process (which made the root's hal0), and that hal0 as an account to act as."""
    with traversable_root() as root:
        s = served()
        done = run_cli(*install_args(root, s))
        assert done.returncode == 0, done.stderr
        yield root, s, sandbox_account(root)


@pytest.fixture(scope="module")
def pyz() -> Path:
    """dist/hal0-lemonade.pyz, built by scripts/pyz (reproducible: same bytes every build)."""
    repo = Path(__file__).resolve().parents[2]
    done = subprocess.run(
        ["bash", "scripts/pyz"], cwd=repo, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    return repo / "dist/hal0-lemonade.pyz"
