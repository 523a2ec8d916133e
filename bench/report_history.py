"""BENCHMARKS.md: the history of the 200 MB data path and what is left in it."""

from __future__ import annotations

from bench.measure import median
from bench.report_fmt import cpu, wall
from bench.results import DataRun, Extras

RATIO_TARGET = 0.5


def history(run: DataRun, ex: Extras | None) -> list[str]:
    """The changes that made the data path fast, with what each buys in this run (the
    what-if rows, on the site ``run`` ran on)."""
    inst_wall, inst_cpu = wall(run.installer), cpu(run.installer)
    base_wall, synced_wall = wall(run.baseline), wall(run.baseline_synced)
    sync_s = median(run.sync_stage)
    whatif_step = {k: median(v) for k, v in ex.whatif_step.items()} if ex else {}
    bd = (
        {k: median([b[k] for b in ex.breakdown]) for k in ex.breakdown[0]}
        if ex and ex.breakdown
        else {}
    )
    startup = {k: median(v) for k, v in ex.startup.items()} if ex else {}
    as_is = whatif_step.get("as is", float("nan"))

    def cost(v: str) -> str:
        return f"{whatif_step.get(v, float('nan')) - as_is:+.2f} s"

    cli_s = startup.get("hal0-lemonade --version", 0.0)
    target = RATIO_TARGET * base_wall
    ratio = inst_wall / base_wall
    verdict = (
        f"On the {run.site.label}, the target (<= {RATIO_TARGET}x) needs the cold install at "
        f"<= {target:.2f} s; it takes "
        f"{inst_wall:.2f} s ({ratio:.2f}x; {inst_wall / synced_wall:.2f}x of the pipeline that "
        "also syncs)"
    )
    verdict += ": met." if ratio <= RATIO_TARGET else ": missed."
    return [
        "The first full run of this bench (commit 840ffb8, before the data path was reworked) "
        "measured the cold install at 2.85 s vs "
        "the pipeline's 1.98 s = 1.44x, no-op 0.245 s, 1 GiB peak RSS 39.5 MiB, health 26 ms "
        "median. The run at d61faf3 measured 1.24 s vs 1.67 s = 0.74x, in the repo's own dir "
        "on the journal-less root disk, with reps back to back; the run at 321949b, the last "
        "before the real-archive and restart workloads were added, 0.74 s vs 1.62 s = 0.46x "
        "on a fresh ext4 (11 reps), no-op 0.148 s on the 200 MB root. The changes since the first "
        "run, each with what it buys in this run's what-if table where it can be switched off:",
        "",
        "1. One pass on both cores (`archive.py`): threads joined by small bounded queues "
        "read the source (fetch, SHA-256, tee to the cache), inflate it (zlib "
        "`decompressobj(wbits=31)`, same checks as `GzipFile`) into at most 8 x 1 MiB, and "
        "parse the tar headers and write members straight from those chunks (no tarfile "
        "`_Stream`/`ExFileObject` copies). The single largest gain; not switchable here.",
        "2. No per-read copies: `HashingReader.read` hands the body's bytes on.",
        f"3. zlib-ng (a dependency) for the inflate: `stdlib zlib` costs {cost('stdlib zlib')}.",
        "4. Early flushes (`resources/installer.py`): `no early sync` costs "
        f"{cost('no early sync')}. The "
        "final syncfs still decides what goes live, and now also covers the downloaded "
        "archive (one flush instead of an fsync of the archive and then a syncfs).",
        "5. Downloads on the stdlib's `http.client` (`download.py`) instead of httpx: httpx "
        "spent ~0.15-0.2 s of CPU per 52 MB in its per-chunk Python code, on the thread that "
        "also inflated, plus ~80 ms importing itself and loading certifi even for http://; "
        "`http.client` reads the same body with one recv per chunk for ~0.02 s. Chunks of up "
        "to 256 KiB instead of 64 KiB.",
        "6. Less at start-up: the subcommands other than install import their modules only "
        "when they run; `http.client` is imported when a health check runs; libc is no "
        "longer looked up with ldconfig.",
        "7. The manifest and marker are written plainly into the staging tree (its syncfs "
        "covers them) instead of each with its own fsync, temp file and rename.",
        "8. Early flushes back to back: a flush that outlasts the 50 ms interval (on this disk "
        "most take 50-250 ms) is followed at once instead of after another 50 ms, in which the "
        "disk sat idle; the final syncfs fell from ~0.12 s to a few tens of ms.",
        "9. A quick exit (`entry.py`): once the command is done, atexit hooks run, the "
        "standard streams are flushed and the process leaves with `os._exit`, skipping the "
        "interpreter's teardown (40-60 ms of clearing modules and collecting garbage with "
        "nothing left to do). The cyclic GC is off while the CLI is imported (~35 collections "
        "of objects that live until exit), then those objects are frozen.",
        "10. Fewer imports before the first byte: package data through `pkgutil` instead of "
        "`importlib.resources` (which pulled in zipfile, tempfile and random), no `secrets`, "
        "`difflib` only when a diff is made.",
        "",
        "The bench's HTTP server sends the archive with `sendfile` (a real origin is another "
        "machine; a Python copy loop took CPU from the client under test); the shell pipeline "
        "gains nothing from that, since its curl stage has the second core to itself.",
        "",
        f"Durability as a whole (`no sync at all`) is worth {cost('no sync at all')} of the "
        "release step now that the flushes overlap the work (the pipeline's own `sync -f` "
        f"takes {sync_s:.2f} s after it); the per-file manifest hashes (`no per-file hash`) "
        f"{cost('no per-file hash')}. A fourth thread for those hashes was tried twice and "
        "dropped: it moves ~0.13 s of CPU off the writing thread, but both cores are busy "
        "while the release arrives, so the wall time did not move. Also tried and dropped: "
        "kicking each file's write-back with `sync_file_range` instead of the early syncfs "
        "(~0.2 s slower; it is kept, beside the early flushes, for files of 1 MiB and more, "
        "which takes the real release's final flush from ~7 ms to ~0.4 ms), a queue of 32 "
        "inflated chunks instead of 8 (slower), of 4 (no change).",
        "",
        verdict + " While the release arrives the install is CPU-bound on two cores: "
        f"{inst_cpu:.2f} s of CPU (user+sys) in {inst_wall:.2f} s of wall, with the kernel's "
        "write-back and the loop device on the same cores. Start-up and the CLI's imports "
        f"take ~{cli_s:.2f} s on one core before any byte moves; the release step takes "
        f"{bd.get('release step total', float('nan')):.2f} s in the probe, of which the "
        "inflate (zlib-ng, ~0.25-0.3 s of CPU for this archive) is the longest serial part. "
        "What is left is spread thin: the manifest hashes (above), the download cache's copy "
        "of the archive (~0.06 s in a paired A/B run; it is what makes resume and offline "
        "`--reinstall` work), the account step's "
        "`useradd` (~20 ms). On the shared 2-core VM this was written on, the same code "
        "measured 0.46x to 0.53x in full runs minutes apart: the installer is the side that "
        "waits for the disk, and the VM's disk and CPU speed change from one window to the "
        "next.",
    ]
