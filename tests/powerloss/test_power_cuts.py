"""Cut the power at every kill point of the kill-point suite, and after runs that complete.

A SIGKILL keeps everything the kernel already accepted; a power cut keeps only what was made
durable, directory entries included.  Each case runs the real installer on a loop-mounted ext4
(see ``disk.py``) from the kill-point suite's start states and, for each of its kill points:

1. kills it there, cuts the power, and checks the kill-point suite's promise again (the live
   tree is the complete old or new release, config.json parses and is the old or new one),
   plus the accounts database: whole, consistent, no shadow-utils leftovers, old or new;
2. re-runs the install, which must converge to exactly an uninterrupted install (the same
   comparison as the kill-point suite), then cuts the power again: everything that successful
   run reported is still there, and the state is still exactly the uninterrupted one.

And after an uninterrupted run that reported success: a cut loses nothing it reported, and the
next run has nothing to do.
"""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from hal0_lemonade import fsops
from tests.faults.scenarios import (
    CASES,
    OLD_THREADS,
    SCENARIOS,
    build_world,
    check_old_or_new,
    content,
    copy_tree,
    run_installer,
)
from tests.powerloss.checks import (
    WANTS,
    PowerWorld,
    accounts,
    check_accounts,
    check_reported,
    rerun,
)
from tests.powerloss.disk import disk_from, make_image
from tests.support.httpserver import HTTPTestServer

pytestmark = pytest.mark.powerloss


@pytest.fixture(scope="module")
def pworld(power: Path) -> Iterator[PowerWorld]:
    """The kill-point suite's world (releases, server, uninterrupted references on the plain
    disk), with each scenario's start root copied into an ext4 image once: cases copy that."""
    work = power / "cuts"
    work.mkdir()
    with HTTPTestServer() as server:
        world = build_world(work, server)
        images = {
            scenario: make_image(work / f"{scenario}.img", world.bases[scenario], work)
            for scenario in SCENARIOS
        }
        yield PowerWorld(world, images)


@pytest.mark.parametrize(("scenario", "point"), CASES, ids=[f"{s}:{p}" for s, p in CASES])
def test_a_cut_after_a_kill_leaves_old_or_new_and_a_rerun_converges_durably(
    pworld: PowerWorld, tmp_path: Path, scenario: str, point: str
) -> None:
    world, ref = pworld.world, pworld.world.refs[scenario]
    with disk_from(pworld.images[scenario], tmp_path) as disk:
        root = disk.root
        killed = run_installer(world.args(root), HAL0_LEMONADE_KILL_AT=point)
        assert killed.returncode == -signal.SIGKILL, f"not killed at {point}: {killed.stderr}"

        disk.cut(f"{scenario}:{point}")

        check_old_or_new(world, root, scenario)
        old, new = accounts(world.bases[scenario]), accounts(ref)
        check_accounts(root, old, new, temps=True)
        report = rerun(world, root)
        assert content(root) == content(ref), "the re-run did not converge"

        disk.cut(f"{scenario}:{point}, re-run")

        check_reported(report, root, ref)
        check_accounts(root, accounts(ref), accounts(ref))
        assert content(root) == content(ref), "the converged state did not survive a cut"


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_a_cut_after_a_successful_run_loses_nothing_it_reported(
    pworld: PowerWorld, tmp_path: Path, scenario: str
) -> None:
    world, ref = pworld.world, pworld.world.refs[scenario]
    with disk_from(pworld.images[scenario], tmp_path) as disk:
        root = disk.root
        done = run_installer(world.args(root))
        assert done.returncode == 0, done.stdout + done.stderr
        report = json.loads(done.stdout)

        disk.cut(f"{scenario}: complete run")

        check_reported(report, root, ref)
        check_accounts(root, accounts(ref), accounts(ref))
        assert content(root) == content(ref)
        assert not rerun(world, root)["changed"], "a run after the cut had work to redo"


# Runs whose last change is one durability point: with ext4's single journal, any later sync
# would make an earlier change durable too, so each of these is the one sync that can.
# variant -> (start root, extra flags, a path removed from the start root)
LAST_CHANGES = {
    "fresh --no-start: the --no-start record": ("fresh", ["--no-start"], None),
    "the unit file written again": ("converged", [], "etc/systemd/system/hal0-lemonade.service"),
    # The start root's own thread count: the config does not change, only the release.
    "upgrade of the release alone: the live symlink": ("upgrade", ["--threads", OLD_THREADS], None),
    "a state dir made again": ("converged", [], "var/lib/hal0/models"),
    # As on a real host, where multi-user.target.wants exists (other units; a disable that
    # left it): enable only adds the link.
    "enable into an existing wants dir": ("converged", [], WANTS),
}


@pytest.mark.parametrize("variant", list(LAST_CHANGES))
def test_a_cut_after_a_run_keeps_its_last_change(
    pworld: PowerWorld, tmp_path: Path, variant: str
) -> None:
    world = pworld.world
    start, extra, removed = LAST_CHANGES[variant]
    base = copy_tree(
        world.refs["fresh"] if start == "converged" else world.bases[start], tmp_path / "base"
    )
    if removed is not None:
        fsops.remove_tree(base / removed)

    def args(root: Path) -> list[str]:
        return [*world.args(root), *extra]  # a repeated --threads: the last one counts

    ref = copy_tree(base, tmp_path / "ref")
    done = run_installer(args(ref))
    assert done.returncode == 0, done.stdout + done.stderr
    work = tmp_path / "image"
    work.mkdir()
    with disk_from(make_image(work / "disk.img", base, work), tmp_path) as disk:
        root = disk.root
        done = run_installer(args(root))
        assert done.returncode == 0, done.stdout + done.stderr
        report = json.loads(done.stdout)

        disk.cut(variant)

        check_reported(report, root, ref)
        assert content(root) == content(ref)
        again = run_installer(args(root))
        assert json.loads(again.stdout)["changed"] is False, "a run after the cut had work to redo"
