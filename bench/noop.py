"""Workload 5: a re-run on a converged root changes nothing, and how long it takes.

Two converged roots per site: the real 10.6.0 archive installed as workload 1 installs it
(enabled, not started), and the 200 MB release with ``--no-start`` (as workload 4).  Each
converged by two unmeasured installs; then ``reps`` re-runs of the same command (``--json``),
the venv's console script and the warm pyz interleaved, each between two snapshots of every
inode under the root (inode, mtime, ctime, size, mode), plus one run under ``strace -f``
counting the calls that would change anything (bench/syscalls.py) and one under cProfile.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

from bench import measure, pyz, syscalls
from bench.context import HAL0, PY, REPO, Site, check, fresh, log
from bench.measure import Timed
from bench.results import NoopRun

Args = Callable[[Path], list[str | Path]]  # the install's arguments for a root


def _run(side: str, args: list[str | Path], warm: Path | None) -> Timed:
    if side == "venv":
        return measure.timed([HAL0, *args])
    if warm is None:
        raise AssertionError("no warm pyz cache")
    return measure.timed(pyz.argv(*args), prefix=pyz.prefix(warm))


def run(site: Site, label: str, args: Args, reps: int, warm: Path | None) -> NoopRun:
    """``args(root)``: the install's arguments (without the program) for ``root``."""
    res = NoopRun(site, label)
    root = fresh(site.work, 0.0) / "root"
    root.mkdir()
    for _ in range(2):
        check(measure.timed([HAL0, *args(root)]), f"converging install ({label})")
    os.sync()
    sides = ("venv", "pyz warm") if warm is not None else ("venv",)
    argv = [*args(root), "--json"]
    for i in range(reps):
        for side in sides[i % len(sides) :] + sides[: i % len(sides)]:
            before = measure.snapshot(root)
            t = _run(side, argv, warm)
            check(t, f"no-op run ({side}, {label})")
            after = measure.snapshot(root)
            res.sides.setdefault(side, []).append(t)
            res.changes.append(measure.diff(before, after))
            res.files = len(after)
            res.steps = json.loads(t.out)["steps"]
    res.no_strace = syscalls.unavailable()
    if not res.no_strace:
        code, res.syscalls = syscalls.trace([HAL0, *argv])
        if code != 0:
            raise SystemExit(f"the no-op run under strace exited {code}")
    prof = root.parent / "noop.pstats"
    probe: list[str | Path] = [PY, "-m", "bench.probe", "--noop", *argv, "--profile", prof]
    check(measure.timed(probe, cwd=REPO), "profiled no-op run")
    res.profile = measure.top_functions(prof)
    walls = ", ".join(f"{s} {measure.median([t.wall for t in res.sides[s]]):.3f} s" for s in sides)
    log(f"no-op, {label}, {site.label}: {walls}")
    return res
