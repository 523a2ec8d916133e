"""Fixtures for driving the Ansible role with the real ansible-core against localhost.

Every host is ``localhost`` over the local connection, each with its own sandbox ``--root``
under a temp dir. The role's package path runs for real: the project wheel (built from a
copy of this checkout) and its dependency wheels are pushed into a venv under the temp dir,
created by the host's own python3, exactly as on a fleet host.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
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
# The host's python3 (the one this venv was made from): what the role's venv is made with.
HOST_PYTHON = Path(sys.base_prefix) / "bin" / "python3"
INSTALL_TASK = "hal0_lemonade : Install Lemonade as the hal0-lemonade service"
PIP_TASK = "hal0_lemonade : Install hal0-lemonade into the venv"
PLAY_TIMEOUT = 300

_NOT_SOURCE = shutil.ignore_patterns(
    ".git", ".venv", ".cache", "build", "dist", "*.egg-info", "__pycache__", ".*_cache", "tests"
)


def _run(argv: list[str | Path], what: str) -> None:
    done = subprocess.run(
        [str(a) for a in argv], capture_output=True, text=True, timeout=600, check=False
    )
    if done.returncode != 0:
        pytest.fail(f"{what} exited {done.returncode}:\n{done.stdout}\n{done.stderr}")


@pytest.fixture(scope="session")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """hal0_lemonade-*.whl plus every dependency wheel: what an air-gapped fleet pushes."""
    work = tmp_path_factory.mktemp("wheels")
    # Built from a copy: setuptools writes build/ and *.egg-info into the source tree, and
    # other work may be editing the checkout meanwhile.
    source = work / "source"
    shutil.copytree(PROJECT_DIR, source, ignore=_NOT_SOURCE, symlinks=True)
    out = work / "wheels"
    pip = [sys.executable, "-m", "pip"]
    _run([*pip, "wheel", "-q", "--no-deps", "-w", out, source], "pip wheel --no-deps")
    (wheel,) = out.glob("hal0_lemonade-*.whl")
    _run([*pip, "download", "-q", "--only-binary=:all:", "-d", out, wheel], "pip download")
    shutil.rmtree(source)
    return out


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
    """A sandbox for several localhost 'hosts' that share one package venv."""

    base: Path
    wheels: Path
    release: Release
    runs: int = field(default=0)

    @property
    def sandbox(self) -> Path:
        """Everything the role writes: package home, roots, archive caches."""
        return self.base / "fleet"

    @property
    def home(self) -> Path:
        return self.sandbox / "opt-hal0-lemonade"

    @property
    def index_source(self) -> dict[str, Any]:
        """Role variables for the index path, at the wheels the 'pushed' host received."""
        return {
            "hal0_lemonade_package_source": "index",
            "hal0_lemonade_pip_extra_args": [
                "--no-index",
                "--find-links",
                str(self.home / "wheels"),
            ],
        }

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
            "hal0_lemonade_manage_os_packages": False,
            "hal0_lemonade_python": str(HOST_PYTHON),
            "hal0_lemonade_home": str(self.home),
            "hal0_lemonade_wheels_src": str(self.wheels),
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
def fleet(tmp_path_factory: pytest.TempPathFactory, wheels: Path, release: Release) -> Fleet:
    return Fleet(tmp_path_factory.mktemp("ansible"), wheels, release)


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
