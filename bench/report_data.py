"""BENCHMARKS.md, workload 4: the 200 MB data path, where its time goes, RSS and health."""

from __future__ import annotations

import math

from bench.measure import QUIET_S, median
from bench.report_fmt import (
    MiB,
    cpu,
    paired,
    profile_table,
    ratio,
    rss,
    spread,
    table,
    verdict,
    wall,
    walls,
)
from bench.results import DataRun, Extras, Results

TARGET = 0.50
RSS_TARGET_MIB = 80
HEALTH_TARGET_MS = 150


def summary(res: Results) -> list[list[str]]:
    rows = []
    for run in res.data:
        inst, base = walls(run.installer), walls(run.baseline)
        r = ratio(inst, base)
        rows.append(
            [
                "4. 200 MB data path: install `--no-start` vs curl + sha256sum + tar",
                run.site.label,
                f"{spread(inst, digits=2)} vs {spread(base, digits=2)} = **{r:.2f}x** (per rep "
                f"{paired(inst, base)}; vs the pipeline + `sync -f`: "
                f"{ratio(inst, walls(run.baseline_synced)):.2f}x)",
                f"<= {TARGET:.2f}x",
                verdict(r <= TARGET),
            ]
        )
    return rows


def _site(run: DataRun) -> list[str]:
    stages = [median([s[i] for s in run.baseline_stages]) for i in range(3)]
    rows = [
        [
            label,
            spread(walls(ts), digits=2),
            f"{cpu(ts):.2f} s",
            f"{rss(ts):.1f} MiB",
        ]
        for label, ts in (
            ("shell: curl -o f; sha256sum -c; tar -xzf --strip-components=1", run.baseline),
            ("the same, then `sync -f` of the extracted tree (syncfs)", run.baseline_synced),
            ("hal0-lemonade install --root R --no-start --artifact URL --sha256 H", run.installer),
        )
    ]
    return [
        f"### On the {run.site.label} ({run.site.filesystem})",
        "",
        *table(["", "wall: median (min-max)", "CPU user+sys", "peak RSS"], rows),
        "",
        f"Shell pipeline stages: curl {stages[0]:.2f} s, sha256sum {stages[1]:.2f} s, "
        f"tar -xzf {stages[2]:.2f} s; `sync -f` afterwards {median(run.sync_stage):.2f} s.",
        "",
    ]


def section(res: Results) -> list[str]:
    if not res.data and res.extras is None:
        return []
    out = ["## 4. The 200 MB data path", ""]
    if res.data:
        n = len(res.data[0].installer)
        out += [
            f"{n} reps per side, interleaved (the order rotates), each in a fresh dir after a "
            f"sync and {QUIET_S:g} s of quiet (right after a run that wrote ~250 MB, the next "
            "one measured 0.1-0.25 s slower). The seed's pipeline fsyncs nothing; the "
            "installer keeps its durability (one syncfs covering the new tree and the "
            "downloaded archive before either is renamed into place, plus flushes while it "
            "arrives), so the pipeline followed by `sync -f` is the like-for-like reference.",
            "",
        ]
        for run in res.data:
            out += _site(run)
    if res.extras is not None:
        out += extras(res.extras, res)
    return out


def extras(ex: Extras, res: Results) -> list[str]:
    out: list[str] = []
    bd = {k: median([b[k] for b in ex.breakdown]) for k in ex.breakdown[0]} if ex.breakdown else {}
    if bd:
        share = bd.get("fetch+verify+extract", 0.0) / bd.get("probe process wall", math.inf)
        out += [
            f"### Where the installer's time goes (on the {ex.site})",
            "",
            "The same install via `bench/probe.py`, the release step timed from inside; medians:",
            "",
            *table(
                ["part", "time"],
                [[k, f"{v:.3f} s"] for k, v in bd.items()]
                + [
                    [
                        "pure data path (fetch+verify+extract) share of the probe's wall",
                        f"{share:.0%}",
                    ]
                ],
            ),
            "",
        ]
    if ex.startup:
        startup = {k: median(v) for k, v in ex.startup.items()}
        out += ["Interpreter start-up and imports (separate processes, medians):", ""]
        out += table(["command", "wall"], [[k, f"{v * 1000:.0f} ms"] for k, v in startup.items()])
        out.append("")
    if ex.whatif:
        as_is = median(ex.whatif_step.get("as is", [math.nan]))
        out += [
            "What-if: `bench/probe.py --whatif VARIANT`, the whole release step "
            "(`Installer.install`: fetch, verify, extract, records, syncs, swap) in a fresh "
            "process with one change patched in from outside src/. `stdlib zlib`: inflate on "
            "the stdlib's zlib instead of zlib-ng; `no early sync`: no flushes while the release "
            "arrives, only the final fsync/syncfs; `no per-file hash`: the manifest's SHA-256s "
            "skipped; `no sync at all`: no fsync, syncfs or writeback kick anywhere (not a "
            "mode the installer has).",
            "",
            *table(
                ["variant", "release step: median (min-max)", "vs as is", "process wall", "CPU"],
                [
                    [
                        k,
                        spread(ex.whatif_step[k], digits=2),
                        f"{median(ex.whatif_step[k]) - as_is:+.2f} s",
                        f"{wall(v):.2f} s",
                        f"{cpu(v):.2f} s",
                    ]
                    for k, v in ex.whatif.items()
                ],
            ),
            "",
        ]
    if ex.micro:
        out += ["Pieces measured in-process on the cached archive:", ""]
        out += table(["piece", "time"], [[k, f"{v:.3f} s"] for k, v in ex.micro])
        out.append("")
    if ex.profile_cold:
        out += [
            "cProfile of one cold release step, heaviest own time first (the main thread only: "
            "cProfile does not see the inflate thread):",
            "",
            *profile_table(ex.profile_cold, ms=False),
            "",
        ]
    out += _rss_health(ex, res)
    return out


def _p90(ms: list[float]) -> float:
    return sorted(ms)[max(0, math.ceil(0.9 * len(ms)) - 1)]


def _rss_health(ex: Extras, res: Results) -> list[str]:
    out: list[str] = []
    if ex.rss_1gib:
        big = res.archives["1GiB"]
        small = next((r.installer for r in res.data if r.installer), [])
        peak = rss(ex.rss_1gib)
        out += [
            "### Peak RSS (earlier target: <= 80 MiB)",
            "",
            f"`hal0-lemonade install` of the {big.unpacked_bytes / MiB:.0f} MiB-unpacked archive "
            f"({big.gz_bytes / 1e6:.0f} MB gzip, {big.files} files), {len(ex.rss_1gib)} reps: "
            + ", ".join(f"{t.maxrss_kib / 1024:.1f} MiB" for t in ex.rss_1gib)
            + f" (wall {wall(ex.rss_1gib):.1f} s): {verdict(peak <= RSS_TARGET_MIB)}. The 200 MB "
            f"archive: {rss(small):.1f} MiB. `ru_maxrss` of a small launcher's child (the "
            "launcher's ~10 MiB is the floor).",
            "",
        ]
    if ex.health:
        primary = ex.health[0].samples_ms
        out += [
            f"### Health latency (earlier target: <= {HEALTH_TARGET_MS} ms)",
            "",
            "`hal0_lemonade.health.wait_healthy` (the installer's poll loop) against a process "
            "(bench/health_server.py) that starts answering at a known instant, 0.3-1.5 s "
            "after the wait begins; no systemd, no lemond (workload 3 has those). The third "
            "row forks `systemctl --version` every 0.25 s, a lower bound for `still_running`. "
            f"Max of the first row: {verdict(max(primary, default=1e9) <= HEALTH_TARGET_MS)}.",
            "",
            *table(
                ["variant", "samples", "median", "p90", "max"],
                [
                    [
                        h.mode,
                        str(len(h.samples_ms)),
                        f"{median(h.samples_ms):.0f} ms",
                        f"{_p90(h.samples_ms):.0f} ms",
                        f"{max(h.samples_ms):.0f} ms",
                    ]
                    for h in ex.health
                ],
            ),
            "",
        ]
    return out
