"""BENCHMARKS.md, workloads 1 and 2: the real archive's whole install, seed vs venv vs pyz."""

from __future__ import annotations

from bench.report_fmt import (
    cpu,
    paired,
    profile_table,
    ratio,
    rss,
    spread,
    table,
    verdict,
    walls,
)
from bench.results import RealRun, Results

TARGET = 0.70
LABELS = {
    "seed": "`bash bench/seed_step.sh ROOT URL SHA` (hal0's original bash step)",
    "venv": "`.venv/bin/hal0-lemonade install --root ROOT --version V --artifact URL --sha256 SHA`",
    "pyz cold": "`/usr/bin/python3 dist/hal0-lemonade.pyz install ...`, code cache absent",
    "pyz warm": "the same, code cache unpacked by an earlier run",
    "seed, host-like root": "seed, on a root with a Debian host's skeleton and accounts",
    "venv, host-like root": "venv, on a root with a Debian host's skeleton and accounts",
}


# Workload 1's rows: (baseline side, installer side, what the row says).
VERSUS = (
    ("seed", "venv", "1. real archive, whole install: venv vs seed_step.sh"),
    (
        "seed, host-like root",
        "venv, host-like root",
        "1. the same on a host-like root (a Debian host's skeleton and accounts)",
    ),
)


def summary(res: Results) -> list[list[str]]:
    rows = []
    for base_side, side, what in VERSUS:  # workload 1 on each site, each kind of root
        for run in res.real:
            seed, venv = walls(run.sides.get(base_side, [])), walls(run.sides.get(side, []))
            if seed and venv:
                r = ratio(venv, seed)
                rows.append(
                    [
                        what,
                        run.site.label,
                        f"{spread(venv)} vs {spread(seed)} = **{r:.2f}x** "
                        f"(per rep {paired(venv, seed)})",
                        f"<= {TARGET:.2f}x",
                        verdict(r <= TARGET),
                    ]
                )
    for run in res.real:
        venv = walls(run.sides.get("venv", []))
        cold, warm = walls(run.sides.get("pyz cold", [])), walls(run.sides.get("pyz warm", []))
        if venv and (cold or warm):
            parts = [
                f"{name} {spread(v)} = **{ratio(v, venv):.2f}x** (per rep {paired(v, venv)})"
                for name, v in (("cold", cold), ("warm", warm))
                if v
            ]
            rows.append(
                [
                    "2. the same install from the pyz / from the venv",
                    run.site.label,
                    "; ".join(parts),
                    "none (reported)",
                    "-",
                ]
            )
    return rows


def _site(run: RealRun) -> list[str]:
    seed, venv = walls(run.sides.get("seed", [])), walls(run.sides.get("venv", []))
    rows = []
    for side, ts in run.sides.items():
        w = walls(ts)
        rows.append(
            [
                LABELS.get(side, side),
                spread(w),
                f"{cpu(ts):.3f} s",
                f"{rss(ts):.1f} MiB",
                f"{ratio(w, seed):.2f}x ({paired(w, seed)})" if seed else "-",
                f"{ratio(w, venv):.2f}x ({paired(w, venv)})" if venv else "-",
            ]
        )
    head = ["side", "wall: median (min-max)", "CPU user+sys", "peak RSS", "vs seed", "vs venv"]
    return [
        f"### On the {run.site.label} ({run.site.filesystem})",
        "",
        *table(head, rows),
        "",
    ]


def section(res: Results) -> list[str]:
    if not res.real:
        return []
    real = res.real_archive
    what = f"`{real.name}` ({real.version})" if real else "the real archive"
    n = len(next(iter(res.real[0].sides.values()), []))
    out = [
        f"## 1 and 2. The real archive, whole install ({n} reps per side, interleaved)",
        "",
        f"Each rep installs {what} into a fresh, empty root on the filesystem named, fetched "
        "over HTTP from the bench's server on 127.0.0.1; the sides run in an order that "
        "rotates each rep, each after a sync and 0.5 s of quiet. Ratios are of the medians, "
        "with the range of the per-rep ratios (rep i of one side against rep i of the other) "
        "in brackets.",
        "",
        "- **seed**: `bench/seed_step.sh`, hal0's original bash step (PR-159) doing the same "
        "work relocated under the root: curl to a `mktemp -d` dir (TMPDIR points at the rep "
        "dir, so the download lands on the filesystem measured, as the installer's cache "
        "does), `sha256sum -c`, `tar -xzf --strip-components=1` into /opt/lemonade, the "
        "marker, groupadd + useradd `--prefix ROOT` into an empty accounts database, the state "
        "dirs, the config by temp file + mv, the unit, `systemctl --root ROOT enable`. It "
        "syncs nothing, keeps no previous release, hashes nothing but the archive.",
        "- **venv**: the installer's console script: all six steps (the service is enabled, "
        "not started: no systemd runs under `--root`), with its durability (syncs before "
        "anything goes live), the digest-keyed download cache, the manifest and the "
        "preflight (which runs the archive's `lemond --version` and checks its libraries).",
        "- **pyz cold / warm**: the same command from the one-file installer (`bash "
        "scripts/pyz`) on `/usr/bin/python3`, as a host runs it. Its code cache is "
        "`/var/cache/hal0-lemonade-pyz`: each pyz run has a dir of the bench's, on the "
        "filesystem measured, bound over `/var/cache` in a private mount namespace (set up "
        "before the timed launcher starts), empty for a cold run (the pyz unpacks and "
        "compiles its code, `os.sync()`s, then installs), unpacked for a warm one. The "
        "host's own `/var/cache` is never touched.",
        "",
    ]
    for run in res.real:
        out += _site(run)
    for run in res.real:
        out += _costs(run)
    return out


def _rest(rows: list[tuple[str, int, float]]) -> list[list[str]]:
    if not rows:
        return []
    n, t = sum(r[1] for r in rows), sum(r[2] for r in rows)
    return [[f"{len(rows)} other paths", str(n), f"{t * 1000:.1f} ms"]]


def _costs(run: RealRun) -> list[str]:
    """One venv install traced (children, syncs) and one profiled: where fixed costs sit."""
    out: list[str] = []
    tl = run.timeline
    if tl is not None:
        rows = [
            [f"`{label}`", f"{at * 1000:.0f} ms", f"{took * 1000:.1f} ms"]
            for label, at, took in tl.children
        ]
        syncs = ", ".join(f"{n} x {k} ({s * 1000:.1f} ms)" for k, (n, s) in tl.syncs.items())
        out += [
            f"### Where a real-archive install's time goes ({run.site.label})",
            "",
            f"One venv install under `strace -f -tt -T --seccomp-bpf` (process starts, exits "
            f"and syncs only; {tl.wall * 1000:.0f} ms from its exec to its exit): the "
            f"processes it starts, from exec to exit. Syncs: {syncs or 'none'}.",
            "",
            *table(["process", "starts at", "lives"], rows),
            "",
        ]
        if tl.sync_targets:
            out += [
                "What it syncs (by descriptor's path; the root's path shown as ROOT):",
                "",
                *table(
                    ["call and path", "calls", "total"],
                    [[f"`{k}`", str(n), f"{t * 1000:.1f} ms"] for k, n, t in tl.sync_targets[:14]]
                    + _rest(tl.sync_targets[14:]),
                ),
                "",
            ]
    if run.profile:
        out += [
            f"cProfile of one venv install ({run.site.label}; after the imports, so start-up "
            "is not in it: see the start-up table under workload 4), hal0_lemonade's "
            "functions by cumulative time:",
            "",
            *profile_table(run.profile, ms=True),
            "",
        ]
    return out
