"""Fixtures for driving the Ansible role with the real ansible-core against localhost.

Every host is ``localhost`` over the local connection, each with its own sandbox ``--root``
under a temp dir. The role pushes the installer for real: the one-file pyz that
``bash scripts/pyz`` builds from this checkout is checked against its pinned digest, copied
into the sandbox's stand-in for /usr/local/sbin, and run there by the host's own python3
(Debian's /usr/bin/python3, no venv, nothing installed), exactly as on a fleet host.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.ansible.callback_plugins.hal0_record import RECORD_ENV
from tests.support.archives import Release, build_release
from tests.support.httpserver import HTTPTestServer

PROJECT_DIR = Path(__file__).resolve().parents[2]
ANSIBLE_DIR = PROJECT_DIR / "deploy" / "ansible"
SITE_PLAYBOOK = ANSIBLE_DIR / "examples" / "site.yml"
CALLBACK_DIR = Path(__file__).resolve().parent / "callback_plugins"
ANSIBLE_PLAYBOOK = Path(sys.executable).parent / "ansible-playbook"
# The host's python3 (the one this venv was made from): what runs the pushed pyz.
HOST_PYTHON = Path(sys.base_prefix) / "bin" / "python3"
INSTALL_TASK = "hal0_lemonade : Install Lemonade as the hal0-lemonade service"
PYZ_CHECK_TASK = "hal0_lemonade : Check the installer against hal0_lemonade_pyz_sha256"
PUSH_TASK = "hal0_lemonade : Push the installer (hal0-lemonade.pyz)"
PLAY_TIMEOUT = 300


@dataclass(frozen=True)
class Pyz:
    """A one-file installer on the control node and the SHA-256 an operator pins for it."""

    path: Path
    sha256: str


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="session")
def pyz(tmp_path_factory: pytest.TempPathFactory) -> Pyz:
    """dist/hal0-lemonade.pyz as ``bash scripts/pyz`` builds it, with the digest it printed."""
    done = subprocess.run(
        ["bash", str(PROJECT_DIR / "scripts" / "pyz")],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if done.returncode != 0:
        pytest.fail(f"scripts/pyz exited {done.returncode}:\n{done.stderr[-3000:]}")
    printed = done.stdout.split()[0]
    # A copy is what the plays push: another build of the checkout may replace dist/ meanwhile.
    copy = tmp_path_factory.mktemp("pyz") / "hal0-lemonade.pyz"
    shutil.copyfile(PROJECT_DIR / "dist" / "hal0-lemonade.pyz", copy)
    if _sha256(copy) != printed:
        pytest.fail(f"dist/hal0-lemonade.pyz is not the build scripts/pyz printed ({printed})")
    return Pyz(copy, printed)


@pytest.fixture(scope="session")
def rebuilt_pyz(pyz: Pyz, tmp_path_factory: pytest.TempPathFactory) -> Pyz:
    """Another file that runs the same code: what a new build looks like to the role (only
    the zip's comment differs, so the unpacked cache is shared and nothing else moves)."""
    path = tmp_path_factory.mktemp("rebuilt") / "hal0-lemonade.pyz"
    shutil.copyfile(pyz.path, path)
    with zipfile.ZipFile(path, "a") as archive:
        archive.comment = b"another build"
    done = subprocess.run(
        [str(HOST_PYTHON), str(path), "--version"], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    return Pyz(path, _sha256(path))


@pytest.fixture(scope="session")
def release(tmp_path_factory: pytest.TempPathFactory) -> Release:
    return build_release(tmp_path_factory.mktemp("release"), "10.6.0")


@pytest.fixture(scope="session")
def mirror(release: Release) -> Iterator[tuple[HTTPTestServer, str]]:
    """A local mirror on 127.0.0.1 serving the release: the direct-download way."""
    with HTTPTestServer() as server:
        yield server, server.add(f"/mirror/{release.name}", release.path)


@dataclass
class PlayRun:
    """One ``ansible-playbook`` run: exit code, human output, and every task result."""

    rc: int
    output: str
    records: list[dict[str, Any]]

    def results(self, host: str) -> list[dict[str, Any]]:
        return [r for r in self.records if r["host"] == host]

    def task(self, host: str, name: str) -> dict[str, Any]:
        for record in self.results(host):
            if record["task"] == name:
                return record
        raise AssertionError(f"no result for {name!r} on {host}:\n{self.output}")

    def changed(self, host: str) -> list[str]:
        return [r["task"] for r in self.results(host) if r["result"].get("changed")]

    def failed(self, host: str) -> list[str]:
        return [r["task"] for r in self.results(host) if r["status"] == "failed"]


@dataclass
class Fleet:
    """A sandbox for several localhost 'hosts' that share one installer, as they share one
    machine: the first host's run pushes it, the others find it there, unchanged."""

    base: Path
    pyz: Pyz
    release: Release
    runs: int = field(default=0)

    @property
    def sandbox(self) -> Path:
        """Everything the role writes: the installer, roots, archive caches."""
        return self.base / "fleet"

    @property
    def executable(self) -> Path:
        """The hosts' shared stand-in for /usr/local/sbin/hal0-lemonade."""
        return self.sbin("shared") / "hal0-lemonade"

    def sbin(self, name: str) -> Path:
        """A stand-in for /usr/local/sbin: there on a real host before the role runs."""
        path = self.sandbox / "sbin" / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def root(self, host: str) -> Path:
        return self.sandbox / "roots" / host

    def host_vars(self, host: str, **overrides: Any) -> dict[str, Any]:
        """Connection and role variables of a localhost host, each with its own root."""
        root = self.root(host)
        root.mkdir(parents=True, exist_ok=True)
        return {
            "ansible_connection": "local",
            "ansible_python_interpreter": sys.executable,
            "ansible_become": False,
            "hal0_lemonade_pyz_src": str(self.pyz.path),
            "hal0_lemonade_pyz_sha256": self.pyz.sha256,
            "hal0_lemonade_executable": str(self.executable),
            "hal0_lemonade_interpreter": str(HOST_PYTHON),
            "hal0_lemonade_root": str(root),
            "hal0_lemonade_artifact_dir": str(self.sandbox / "cache" / host),
            "hal0_lemonade_version": self.release.version,
            "hal0_lemonade_sha256": self.release.sha256,
            **overrides,
        }

    def play(self, hosts: dict[str, dict[str, Any]], *args: str) -> PlayRun:
        """Run the example playbook (examples/site.yml) from deploy/ansible, as documented."""
        self.runs += 1
        run_dir = self.base / "ansible" / f"run-{self.runs}"
        run_dir.mkdir(parents=True)
        inventory = run_dir / "inventory.yml"  # JSON is YAML
        inventory.write_text(json.dumps({"lemonade": {"hosts": hosts}}, indent=2))
        record = run_dir / "record.jsonl"
        record.touch()
        env = {
            **os.environ,
            "ANSIBLE_CONFIG": str(ANSIBLE_DIR / "ansible.cfg"),
            "ANSIBLE_HOME": str(self.base / "ansible" / "home"),
            "ANSIBLE_LOCAL_TEMP": str(self.base / "ansible" / "tmp"),
            "ANSIBLE_REMOTE_TMP": str(self.base / "ansible" / "remote-tmp"),
            "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_CALLBACK_PLUGINS": str(CALLBACK_DIR),
            "ANSIBLE_CALLBACKS_ENABLED": "hal0_record",
            RECORD_ENV: str(record),
        }
        env.pop("HAL0_SKIP_LEMONADE_SHA", None)
        done = subprocess.run(
            [str(ANSIBLE_PLAYBOOK), "-i", str(inventory), str(SITE_PLAYBOOK), *args],
            cwd=ANSIBLE_DIR,
            env=env,
            capture_output=True,
            text=True,
            timeout=PLAY_TIMEOUT,
            check=False,
        )
        lines = record.read_text(encoding="utf-8").splitlines()
        return PlayRun(
            done.returncode,
            done.stdout + done.stderr,
            [json.loads(line) for line in lines],
        )


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory, pyz: Pyz, release: Release) -> Fleet:
    if os.geteuid() != 0:
        # The role pushes the installer root-owned (root runs it); only root can chown.
        pytest.skip("the role pushes the installer as root:root, which needs root")
    return Fleet(tmp_path_factory.mktemp("ansible"), pyz, release)


Snapshot = dict[str, tuple[int, int, str | None]]


def snapshot(top: Path) -> Snapshot:
    """mode, mtime_ns and content digest (or link target) of everything under ``top``."""
    snap: Snapshot = {}
    for path in sorted(top.rglob("*")):
        st = path.lstat()
        if path.is_symlink():
            content: str | None = f"-> {path.readlink()}"
        elif path.is_file():
            content = hashlib.sha256(path.read_bytes()).hexdigest()
        else:
            content = None
        snap[str(path.relative_to(top))] = (st.st_mode, st.st_mtime_ns, content)
    return snap
