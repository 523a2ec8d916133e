"""useradd itself killed at each of its writes, with and without a power cut after.

Killing the installer never kills a ``useradd`` it runs (that runs in its own session), but an
OOM kill, a timeout or a power cut can stop useradd anywhere.  Each case takes a fresh root on
the loop-mounted ext4 up to the account step (the installer killed just before its useradd),
runs that very useradd under strace, which SIGKILLs it as it enters its N-th ``write``
(``fsync``, ``rename``...), optionally cuts the power, and then checks that the next install
rolls the interrupted useradd back and converges to exactly an uninterrupted install, durably
(a cut after it changes nothing).

The same is done with a kill inside that rollback, then a cut: it is done again, and converges.
"""

from __future__ import annotations

import collections
import shutil
import signal
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import pytest

from hal0_lemonade import runner
from hal0_lemonade.layout import Layout
from hal0_lemonade.resources import account
from tests.faults.scenarios import build_world, check_old_or_new, content, run_installer
from tests.powerloss.checks import PowerWorld, accounts, check_accounts, rerun
from tests.powerloss.disk import Disk, disk_from, make_image
from tests.support.httpserver import HTTPTestServer

pytestmark = pytest.mark.powerloss

# Every call by which useradd changes the fresh root's database (checked against a trace
# below): the pid files of its four locks (write, fdatasync, link, unlink), the backups
# (fsync, utimensat), the new files (write, fsync, rename), the unlocks (unlink).
USERADD_CALLS = {
    "write": 8,
    "fdatasync": 4,
    "fsync": 8,
    "link": 4,
    "unlink": 8,
    "rename": 4,
    "utimensat": 4,
}
POINTS = [f"{call}#{n}" for call, count in USERADD_CALLS.items() for n in range(1, count + 1)]
CASES = [(point, cut) for point in POINTS for cut in (False, True)]
BEFORE_USERADD = "step.service-account.action#1"  # the fresh install's useradd is action 1
# Inside the rollback of a useradd killed after all its renames (each file has a backup to go
# back to): the first backup's restore half written, renamed, and the point right after the
# rollback (the install's own useradd is next).
ROLLBACK_POINTS = [
    "write.passwd.partial",
    "write.passwd.renamed",
    "write.group.synced",
    "write.gshadow.renamed",
    BEFORE_USERADD,
]


class Recorder:
    """A command runner that only notes the argv (the useradd the installer would run)."""

    def __init__(self) -> None:
        self.argv: list[str] = []

    def run(
        self,
        argv: Sequence[str],
        *,
        check: bool = True,
        timeout: float = 60.0,
        run_as: runner.Identity | None = None,
        env: Mapping[str, str] | None = None,
    ) -> runner.CommandResult:
        self.argv = list(argv)
        return runner.CommandResult(tuple(argv), 0, "", "")


def useradd_argv(root: Path) -> list[str]:
    """The installer's own useradd for this root, as its plan builds it."""
    layout = Layout(root)
    recorder = Recorder()
    step = account.plan(layout, account.probe(layout), recorder)
    action = next(a for a in step.actions if a.diff.startswith("$ useradd"))
    action.run()
    return recorder.argv


def strace(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["strace", "-qq", *args], env=runner.ENV, capture_output=True, text=True, check=False
    )


@pytest.fixture(scope="module")
def pworld(power: Path) -> Iterator[PowerWorld]:
    """The fresh scenario's world, and an image of a fresh root the installer left just before
    its useradd (the empty database seeded and synced)."""
    if shutil.which("strace") is None:
        pytest.skip("useradd kills: strace not found")
    if strace("-o", "/dev/null", "true").returncode != 0:
        pytest.skip("useradd kills: strace cannot trace here (ptrace not permitted)")
    work = power / "useradd"
    work.mkdir()
    with HTTPTestServer() as server:
        world = build_world(work, server)
        image = make_image(work / "fresh.img", world.bases["fresh"], work)
        disk = Disk(image, work / "mnt")
        disk.mount()
        try:
            killed = run_installer(world.args(disk.root), HAL0_LEMONADE_KILL_AT=BEFORE_USERADD)
            assert killed.returncode == -signal.SIGKILL, killed.stderr
        finally:
            disk.unmount()
        yield PowerWorld(world, {"fresh": image})


def test_the_points_are_every_change_useradd_makes(pworld: PowerWorld, tmp_path: Path) -> None:
    """The list above is checked against a trace of the real useradd, so it cannot go stale."""
    with disk_from(pworld.images["fresh"], tmp_path) as disk:
        trace = tmp_path / "useradd.trace"
        calls = ",".join(USERADD_CALLS)
        done = strace("-o", str(trace), "-e", f"trace={calls}", *useradd_argv(disk.root))
        assert done.returncode == 0, done.stderr
    seen = collections.Counter(line.split("(", 1)[0] for line in trace.read_text().splitlines())
    assert {call: seen[call] for call in USERADD_CALLS} == USERADD_CALLS


@pytest.mark.parametrize(
    ("point", "cut"), CASES, ids=[f"{p}{', cut' if cut else ''}" for p, cut in CASES]
)
def test_a_useradd_killed_inside_is_rolled_back_and_the_install_converges(
    pworld: PowerWorld, tmp_path: Path, point: str, cut: bool
) -> None:
    world, ref = pworld.world, pworld.world.refs["fresh"]
    with disk_from(pworld.images["fresh"], tmp_path) as disk:
        root = disk.root
        call, n = point.split("#")
        inject = f"inject={call}:signal=KILL:when={n}"
        killed = strace("-o", "/dev/null", "-e", inject, *useradd_argv(root))
        assert killed.returncode in (-signal.SIGKILL, 128 + signal.SIGKILL), killed.stderr
        if cut:
            disk.cut(f"useradd killed at {point}")
        check_old_or_new(world, root, "fresh")

        report = rerun(world, root)
        assert content(root) == content(ref), "the re-run did not converge"

        disk.cut(f"useradd killed at {point}{', cut' if cut else ''}, re-run")

        assert report["ok"]
        check_accounts(root, accounts(ref), accounts(ref))
        assert content(root) == content(ref), "the converged state did not survive a cut"


@pytest.mark.parametrize("point", ROLLBACK_POINTS)
def test_a_rollback_killed_and_cut_is_done_again(
    pworld: PowerWorld, tmp_path: Path, point: str
) -> None:
    world, ref = pworld.world, pworld.world.refs["fresh"]
    with disk_from(pworld.images["fresh"], tmp_path) as disk:
        root = disk.root
        # unlink#5 is the first of the unlocks: every file is replaced, every lock still held.
        inject = "inject=unlink:signal=KILL:when=5"
        killed = strace("-o", "/dev/null", "-e", inject, *useradd_argv(root))
        assert killed.returncode in (-signal.SIGKILL, 128 + signal.SIGKILL), killed.stderr
        assert sorted(p.name for p in (root / "etc").glob("*.lock")) == [
            f"{db}.lock" for db in ("group", "gshadow", "passwd", "shadow")
        ]
        again = run_installer(world.args(root), HAL0_LEMONADE_KILL_AT=point)
        assert again.returncode == -signal.SIGKILL, f"not killed at {point}: {again.stderr}"

        disk.cut(f"rollback killed at {point}")

        if point == BEFORE_USERADD:  # the rollback is complete: the database before useradd
            check_accounts(root, accounts(world.bases["fresh"]), accounts(ref))
        report = rerun(world, root)
        assert content(root) == content(ref), "the re-run did not converge"

        disk.cut(f"rollback killed at {point}, re-run")

        assert report["ok"]
        check_accounts(root, accounts(ref), accounts(ref))
        assert content(root) == content(ref)
