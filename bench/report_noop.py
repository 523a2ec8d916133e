"""BENCHMARKS.md, workload 5: the no-op re-run on a converged root."""

from __future__ import annotations

from bench.measure import median
from bench.report_fmt import cpu, spread, table, verdict, walls
from bench.results import NoopRun, Results, Syscalls

TARGET_S = 0.15


def _changes(run: NoopRun) -> int:
    return sum(len(c) for c in run.changes)


def _written(sc: Syscalls | None) -> int:
    return len(sc.file_writes) + len(sc.changes) if sc is not None else 0


def _writes_text(run: NoopRun) -> str:
    text = f"{_changes(run)} of {run.files} inodes changed"
    sc = run.syscalls
    if sc is None:
        return text + f"; no syscall count ({run.no_strace})"
    return text + (
        f"; strace: {len(sc.file_writes)} file writes, {len(sc.changes)} metadata changes, "
        f"{len(sc.syncs)} syncs"
    )


def summary(res: Results) -> list[list[str]]:
    rows = []
    for run in res.noop:
        venv = walls(run.sides.get("venv", []))
        met = (
            bool(venv)
            and median(venv) <= TARGET_S
            and _changes(run) == 0
            and _written(run.syscalls) == 0
        )
        pyz = walls(run.sides.get("pyz warm", []))
        rows.append(
            [
                f"5. no-op re-run, {run.root} root",
                run.site.label,
                f"{spread(venv)} (pyz warm {spread(pyz)}); {_writes_text(run)}",
                f"<= {TARGET_S} s, zero writes",
                verdict(met),
            ]
        )
    return rows


def _syscall_lines(sc: Syscalls) -> list[str]:
    out = [
        f"`strace -f -y` of one venv run ({sc.processes} process(es)): "
        f"{len(sc.file_writes)} write-family calls on files, {len(sc.changes)} metadata "
        f"changes, {len(sc.syncs)} syncs, {len(sc.write_opens)} opens for writing, "
        f"{sc.output_writes} writes to stdout/stderr/pipes."
    ]
    listed = sc.file_writes + sc.changes + sc.syncs + sc.write_opens
    if listed:
        out += ["", "```", *listed[:12]]
        if len(listed) > 12:
            out.append(f"... and {len(listed) - 12} more")
        out.append("```")
    return out


def section(res: Results) -> list[str]:
    if not res.noop:
        return []
    n = len(res.noop[0].sides.get("venv", []))
    out = [
        f"## 5. No-op re-run ({n} reps per side)",
        "",
        "Each root is converged by two unmeasured installs (the real archive as workload 1 "
        "installs it, the 200 MB one with `--no-start` as workload 4), then re-run with the "
        "same command plus `--json`, the venv's console script and the warm pyz alternating. "
        "Around each run every file, dir and link under the root is compared (inode, mtime, "
        "ctime, size, mode); one more venv run is traced with `strace -f -y` for every call "
        "that writes data or metadata, opens for writing, or syncs (bench/syscalls.py). "
        "Under `--root` no systemd runs, so this shows that the plan holds no restart, not "
        "what a real host's re-run costs (workload 3 has that).",
        "",
    ]
    booted = (
        [a.wall for a in res.restart.actions if a.kind == "install, no change"]
        if (res.restart)
        else []
    )
    if booted:
        out += [
            f"On a booted host (workload 3's `install, no change`, pyz, real lemond running): "
            f"{spread(booted)}.",
            "",
        ]
    rows = []
    for run in res.noop:
        rows.append(
            [
                f"{run.root}, {run.site.label}",
                spread(walls(run.sides.get("venv", []))),
                spread(walls(run.sides.get("pyz warm", []))),
                f"{cpu(run.sides.get('venv', [])):.3f} s",
                f"{_changes(run)} of {run.files}",
            ]
        )
    out += table(
        ["root, filesystem", "venv: median (min-max)", "pyz warm", "venv CPU", "inodes changed"],
        rows,
    )
    for run in res.noop:
        out += ["", f"{run.root} root, {run.site.label}: steps "]
        out[-1] += ", ".join(f"{s['name']} {s['status']}" for s in run.steps) + "."
        if run.syscalls is not None:
            out += ["", *_syscall_lines(run.syscalls)]
    prof = next((r for r in res.noop if r.profile), None)
    if prof is not None:
        out += [
            "",
            f"cProfile of one no-op run ({prof.root} root, {prof.site.label}, after imports), "
            "heaviest own time first:",
            "",
        ]
        out += table(
            ["function", "calls", "own", "cumulative"],
            [[f"`{f}`", str(c), f"{t:.4f} s", f"{cu:.4f} s"] for f, c, t, cu in prof.profile[:8]],
        )
    return [*out, ""]
