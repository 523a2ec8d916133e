"""SIGKILL the installer at every step boundary and inside the download, extraction and writes.

Each case runs the real installer as a subprocess (``python -m hal0_lemonade install``) with
``HAL0_LEMONADE_KILL_AT`` naming one kill point (see ``hal0_lemonade.failpoints``), and checks:

1. the process really died there (SIGKILL, not a normal exit: the point is real);
2. the live tree is the complete old release or the complete new one -- every file equal to
   that release's, marker and manifest consistent with the files -- or absent on a fresh root;
3. config.json parses and is the old or the new baseline (or absent on a fresh root);
4. a re-run converges to exactly the state of an uninterrupted run (content, mode, owner of
   every path; inodes and mtimes are not compared).

The scenarios (an upgrade and a fresh install), the kill points and the checks are in
``scenarios.py``, which the power-loss suite shares.
"""

from __future__ import annotations

import contextlib
import io
import shutil
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from hal0_lemonade.cli import main
from tests.faults.scenarios import (
    CASES,
    SCENARIOS,
    World,
    build_world,
    check_old_or_new,
    clean_env,
    content,
    copy_tree,
    live_tree,
    run_installer,
)
from tests.support.httpserver import HTTPTestServer

pytestmark = pytest.mark.faults


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with HTTPTestServer() as server:
        yield build_world(tmp_path_factory.mktemp("faults"), server)


def test_there_are_enough_kill_points_and_every_step_boundary_is_one(
    world: World, tmp_path: Path
) -> None:
    """The point lists are checked against a trace of real runs, so they cannot go stale."""
    assert len(CASES) >= 40
    for scenario, points in SCENARIOS.items():
        root = copy_tree(world.bases[scenario], tmp_path / scenario)
        trace = tmp_path / f"{scenario}.trace"
        done = run_installer(world.args(root), HAL0_LEMONADE_FAILPOINT_TRACE=str(trace))
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
    root = copy_tree(world.bases[scenario], tmp_path / "root")

    killed = run_installer(world.args(root), HAL0_LEMONADE_KILL_AT=point)

    assert killed.returncode == -signal.SIGKILL, f"not killed at {point}: {killed.stderr}"
    check_old_or_new(world, root, scenario)

    out = io.StringIO()
    with contextlib.redirect_stdout(out), clean_env():
        code = main(world.args(root))
    assert code == 0, out.getvalue()
    assert content(root) == content(world.refs[scenario])


def test_a_second_kill_during_the_rerun_still_converges(world: World, tmp_path: Path) -> None:
    """Killed in the download, then killed again in the resumed download: a third run wins."""
    root = copy_tree(world.bases["upgrade"], tmp_path / "root")
    for point in ("download.chunk#9", "download.chunk#4"):
        killed = run_installer(world.args(root), HAL0_LEMONADE_KILL_AT=point)
        assert killed.returncode == -signal.SIGKILL
        assert live_tree(root) == world.old_tree
    part = root / f"var/cache/hal0-lemonade/{world.new.sha256}.tar.gz.part"
    assert part.stat().st_size > 0, "the partial download is kept for the resume"
    world.server.clear_requests()
    done = run_installer(world.args(root))
    assert done.returncode == 0, done.stderr
    ranges = [r.range for r in world.server.requests_for(f"/dl/{world.new.name}")]
    assert ranges and ranges[0] is not None, "the third run resumed instead of starting over"
    assert content(root) == content(world.refs["upgrade"])
    shutil.rmtree(root)
