"""The kill-point suite's scenarios, kill points and checks, shared with the power-loss suite.

Two scenarios: an upgrade (10.6.0 -> 10.6.1, with a --threads change, so the release and the
config both change) and a fresh install into an empty root (every step has work).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.support.archives import Release, build_release
from tests.support.httpserver import HTTPTestServer

OLD, NEW = "10.6.0", "10.6.1"
OLD_THREADS, NEW_THREADS = "2", "3"
# At least 20 network chunks (a recv brings at most 256 KiB) and 15 archive members in the new
# release, so every download.chunk#N below is reached whatever sizes the recvs come in.
PADDING_FILES, PADDING_BYTES = 6, 5_400_000

_WRITES = ("partial", "synced", "renamed")
_RELEASE_INSIDE = [
    *(f"download.chunk#{n}" for n in (1, 6, 12, 18)),
    *(f"extract.member#{n}" for n in (1, 5, 10, 15)),
    "write..hal0-manifest.json.partial",  # written into staging, which is synced as a whole
    "write..installed-version.partial",
    "release.staged",
    "release.renamed",
]
UPGRADE_POINTS = [
    "step.lemonade-release.begin",
    *_RELEASE_INSIDE,
    "symlink.previous.staged",
    "symlink.lemonade.staged",
    "release.live",
    "release.pruned",
    "step.lemonade-release.end",
    "step.daemon-config.begin",
    *(f"write.config.json.bak.{w}" for w in _WRITES),
    *(f"write.config.json.{w}" for w in _WRITES),
    "step.daemon-config.end",
    "step.service-start.begin",
    "step.service-start.end",
]
FRESH_POINTS = [
    "step.lemonade-release.begin",
    "download.chunk#3",
    "extract.member#8",
    "release.staged",
    "symlink.lemonade.staged",
    "release.live",
    "step.lemonade-release.end",
    "step.service-account.begin",
    "write.passwd.partial",
    "write.passwd.renamed",
    "write.gshadow.renamed",
    "step.service-account.action#1",
    "step.service-account.action#2",
    "step.service-account.end",
    "step.daemon-config.begin",
    *(f"write.config.json.{w}" for w in _WRITES),
    "step.daemon-config.end",
    "step.systemd-unit.begin",
    *(f"write.hal0-lemonade.service.{w}" for w in _WRITES),
    "step.systemd-unit.end",
    "step.service-start.begin",
    "step.service-start.end",
]
SCENARIOS = {"upgrade": UPGRADE_POINTS, "fresh": FRESH_POINTS}
CASES = [(scenario, point) for scenario, points in SCENARIOS.items() for point in points]

Content = dict[str, tuple[int, int, int, bytes | str | None]]


def content(root: Path) -> Content:
    """Mode, owner and content (or link target) of every path: what a run must converge to."""
    snap: Content = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in sorted(dirnames + filenames):
            path = Path(dirpath, name)
            st = path.lstat()
            if path.is_symlink():
                data: bytes | str | None = str(path.readlink())
            elif path.is_file():
                data = path.read_bytes()
            else:
                data = None
            snap[str(path.relative_to(root))] = (st.st_mode, st.st_uid, st.st_gid, data)
    return snap


def verify_tree(tree: Path) -> str:
    """Check the marker and the manifest against the files; return the version."""
    marker = (tree / ".installed-version").read_text().splitlines()
    manifest = json.loads((tree / ".hal0-manifest.json").read_text())
    assert marker[0] == manifest["version"]
    assert f"sha256={manifest['sha256']}" in marker
    files = {
        str(p.relative_to(tree))
        for p in tree.rglob("*")
        if p.is_file() and not p.is_symlink() and p.name not in {".installed-version"}
    }
    assert files == {*manifest["files"], ".hal0-manifest.json"}
    for rel, rec in manifest["files"].items():
        data = (tree / rel).read_bytes()
        assert len(data) == rec["size"], rel
        assert hashlib.sha256(data).hexdigest() == rec["sha256"], rel
    return str(marker[0])


@dataclass(frozen=True)
class World:
    """Everything the cases share: the releases, a server, the start and end states."""

    server: HTTPTestServer
    old: Release
    new: Release
    url: str
    bases: dict[str, Path]  # scenario -> root before the install
    refs: dict[str, Path]  # scenario -> root after an uninterrupted install
    old_tree: Content
    new_tree: Content
    old_config: dict[str, object]
    new_config: dict[str, object]

    def args(self, root: Path) -> list[str]:
        return [
            "install", "--root", str(root), "--version", NEW, "--artifact", self.url,
            "--sha256", self.new.sha256, "--threads", NEW_THREADS, "--json",
        ]  # fmt: skip


def installer_env(**extra: str) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("HAL0_")}
    clean.update({"HAL0_LEMONADE_HTTP_TIMEOUT": "10", **extra})
    return clean


def run_installer(args: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hal0_lemonade", *args], env=installer_env(**env),
        capture_output=True, text=True, check=False, timeout=120,
    )  # fmt: skip


def copy_tree(src: Path, dest: Path) -> Path:
    # cp -a keeps owners (hal0's files), modes and symlinks exactly.
    subprocess.run(["cp", "-a", str(src), str(dest)], check=True)
    return dest


def live_tree(root: Path) -> Content:
    return content((root / "opt/lemonade").resolve())


def read_config(root: Path) -> dict[str, object]:
    doc: dict[str, object] = json.loads((root / "var/lib/hal0/lemonade/config.json").read_text())
    return doc


def build_world(work: Path, server: HTTPTestServer) -> World:
    """The releases, the start roots (in ``work``) and their uninterrupted ends, served by
    ``server`` (which must outlive the world)."""
    old = build_release(work / "releases", OLD)
    new = build_release(
        work / "releases", NEW, padding_files=PADDING_FILES, padding_bytes=PADDING_BYTES
    )
    url = server.add(f"/dl/{new.name}", new.path)
    upgrade = work / "base-upgrade"
    upgrade.mkdir()
    done = run_installer([
        "install", "--root", str(upgrade), "--version", OLD, "--artifact", str(old.path),
        "--sha256", old.sha256, "--threads", OLD_THREADS, "--json",
    ])  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    fresh = work / "base-fresh"
    fresh.mkdir()
    bases = {"upgrade": upgrade, "fresh": fresh}
    refs = {}
    partial = World(server, old, new, url, bases, {}, {}, {}, {}, {})
    for scenario, base in bases.items():
        ref = copy_tree(base, work / f"ref-{scenario}")
        done = run_installer(partial.args(ref))
        assert done.returncode == 0, done.stdout + done.stderr
        refs[scenario] = ref
    return World(
        server, old, new, url, bases, refs,
        old_tree=live_tree(upgrade), new_tree=live_tree(refs["upgrade"]),
        old_config=read_config(upgrade), new_config=read_config(refs["upgrade"]),
    )  # fmt: skip


def check_old_or_new(world: World, root: Path, scenario: str) -> None:
    """After an interruption: the live tree is the complete old or the complete new release
    (or absent on a fresh root), ``previous`` is the old one, config.json parses and is the
    old or the new baseline (or absent on a fresh root)."""
    live = root / "opt/lemonade"
    if scenario == "fresh" and not live.exists():
        assert not live.is_symlink()
    else:
        version = verify_tree(live.resolve())
        expected = {OLD: world.old_tree, NEW: world.new_tree}[version]
        assert live_tree(root) == expected, f"live tree is not the complete {version}"
        if scenario == "fresh":
            assert version == NEW
    previous = root / "opt/lemonade.releases/previous"
    if previous.is_symlink():
        assert verify_tree(previous.resolve()) == OLD
    config = root / "var/lib/hal0/lemonade/config.json"
    if scenario == "fresh" and not config.exists():
        pass
    else:
        parsed = read_config(root)  # parses
        allowed = (
            [world.new_config] if scenario == "fresh" else [world.old_config, world.new_config]
        )
        assert parsed in allowed


@contextlib.contextmanager
def clean_env() -> Iterator[None]:
    saved = {k: v for k, v in os.environ.items() if k.startswith("HAL0_")}
    for key in saved:
        del os.environ[key]
    try:
        yield
    finally:
        os.environ.update(saved)
