"""SIGKILL the installer at every step boundary and inside the download, extraction and writes.

Each case runs the real installer as a subprocess (``python -m hal0_lemonade install``) with
``HAL0_LEMONADE_KILL_AT`` naming one kill point (see ``hal0_lemonade.failpoints``), and checks:

1. the process really died there (SIGKILL, not a normal exit: the point is real);
2. the live tree is the complete old release or the complete new one -- every file equal to
   that release's, marker and manifest consistent with the files -- or absent on a fresh root;
3. config.json parses and is the old or the new baseline (or absent on a fresh root);
4. a re-run converges to exactly the state of an uninterrupted run (content, mode, owner of
   every path; inodes and mtimes are not compared).

Two scenarios: an upgrade (10.6.0 -> 10.6.1, with a --threads change, so the release and the
config both change) and a fresh install into an empty root (every step has work).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from hal0_lemonade.cli import main
from tests.support.archives import Release, build_release
from tests.support.httpserver import HTTPTestServer

pytestmark = pytest.mark.faults

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


def _env(**extra: str) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("HAL0_")}
    clean.update({"HAL0_LEMONADE_HTTP_TIMEOUT": "10", **extra})
    return clean


def _installer(args: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hal0_lemonade", *args], env=_env(**env),
        capture_output=True, text=True, check=False, timeout=120,
    )  # fmt: skip


def _copy(src: Path, dest: Path) -> Path:
    # cp -a keeps owners (hal0's files), modes and symlinks exactly.
    subprocess.run(["cp", "-a", str(src), str(dest)], check=True)
    return dest


def _tree(root: Path) -> Content:
    return content((root / "opt/lemonade").resolve())


def _config(root: Path) -> dict[str, object]:
    doc: dict[str, object] = json.loads((root / "var/lib/hal0/lemonade/config.json").read_text())
    return doc


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    work = tmp_path_factory.mktemp("faults")
    old = build_release(work / "releases", OLD)
    new = build_release(
        work / "releases", NEW, padding_files=PADDING_FILES, padding_bytes=PADDING_BYTES
    )
    with HTTPTestServer() as server:
        url = server.add(f"/dl/{new.name}", new.path)
        upgrade = work / "base-upgrade"
        upgrade.mkdir()
        done = _installer([
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
            ref = _copy(base, work / f"ref-{scenario}")
            done = _installer(partial.args(ref))
            assert done.returncode == 0, done.stdout + done.stderr
            refs[scenario] = ref
        yield World(
            server, old, new, url, bases, refs,
            old_tree=_tree(upgrade), new_tree=_tree(refs["upgrade"]),
            old_config=_config(upgrade), new_config=_config(refs["upgrade"]),
        )  # fmt: skip


def test_there_are_enough_kill_points_and_every_step_boundary_is_one(
    world: World, tmp_path: Path
) -> None:
    """The lists above are checked against a trace of real runs, so they cannot go stale."""
    assert len(CASES) >= 40
    for scenario, points in SCENARIOS.items():
        root = _copy(world.bases[scenario], tmp_path / scenario)
        trace = tmp_path / f"{scenario}.trace"
        done = _installer(world.args(root), HAL0_LEMONADE_FAILPOINT_TRACE=str(trace))
        assert done.returncode == 0, done.stderr
        hits = trace.read_text().split()
        for point in points:  # each listed point is reached by a real run
            assert (point if "#" in point else f"{point}#1") in hits, (scenario, point)
        boundaries = {h.split("#")[0] for h in hits if h.startswith("step.")}
        listed = {p.split("#")[0] for p in points}
        assert boundaries <= listed, f"{scenario}: unlisted step boundaries"
        assert {p.split("#")[0] for p in points} >= {"download.chunk", "extract.member"}
        assert any(p.startswith("write.config.json.") for p in points)


@pytest.mark.parametrize(("scenario", "point"), CASES, ids=[f"{s}:{p}" for s, p in CASES])
def test_a_kill_leaves_old_or_new_and_a_rerun_converges(
    world: World, tmp_path: Path, scenario: str, point: str
) -> None:
    root = _copy(world.bases[scenario], tmp_path / "root")

    killed = _installer(world.args(root), HAL0_LEMONADE_KILL_AT=point)

    assert killed.returncode == -signal.SIGKILL, f"not killed at {point}: {killed.stderr}"
    live = root / "opt/lemonade"
    if scenario == "fresh" and not live.exists():
        assert not live.is_symlink()
    else:
        version = verify_tree(live.resolve())
        expected = {OLD: world.old_tree, NEW: world.new_tree}[version]
        assert _tree(root) == expected, f"live tree is not the complete {version}"
        if scenario == "fresh":
            assert version == NEW
    previous = root / "opt/lemonade.releases/previous"
    if previous.is_symlink():
        assert verify_tree(previous.resolve()) == OLD
    config = root / "var/lib/hal0/lemonade/config.json"
    if scenario == "fresh" and not config.exists():
        pass
    else:
        parsed = _config(root)  # parses
        allowed = (
            [world.new_config] if scenario == "fresh" else [world.old_config, world.new_config]
        )
        assert parsed in allowed

    out = io.StringIO()
    with contextlib.redirect_stdout(out), _clean_env():
        code = main(world.args(root))
    assert code == 0, out.getvalue()
    assert content(root) == content(world.refs[scenario])


@contextlib.contextmanager
def _clean_env() -> Iterator[None]:
    saved = {k: v for k, v in os.environ.items() if k.startswith("HAL0_")}
    for key in saved:
        del os.environ[key]
    try:
        yield
    finally:
        os.environ.update(saved)


def test_a_second_kill_during_the_rerun_still_converges(world: World, tmp_path: Path) -> None:
    """Killed in the download, then killed again in the resumed download: a third run wins."""
    root = _copy(world.bases["upgrade"], tmp_path / "root")
    for point in ("download.chunk#9", "download.chunk#4"):
        killed = _installer(world.args(root), HAL0_LEMONADE_KILL_AT=point)
        assert killed.returncode == -signal.SIGKILL
        assert _tree(root) == world.old_tree
    part = root / f"var/cache/hal0-lemonade/{world.new.sha256}.tar.gz.part"
    assert part.stat().st_size > 0, "the partial download is kept for the resume"
    world.server.clear_requests()
    done = _installer(world.args(root))
    assert done.returncode == 0, done.stderr
    ranges = [r.range for r in world.server.requests_for(f"/dl/{world.new.name}")]
    assert ranges and ranges[0] is not None, "the third run resumed instead of starting over"
    assert content(root) == content(world.refs["upgrade"])
    shutil.rmtree(root)
