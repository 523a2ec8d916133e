"""Timed child processes, root snapshots and in-process micro-measurements."""

from __future__ import annotations

import functools
import hashlib
import importlib
import importlib.util
import json
import os
import pstats
import statistics
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol


@dataclass(frozen=True)
class Timed:
    wall: float
    user: float
    sys: float
    maxrss_kib: int
    code: int
    out: str
    err: str


# A small, fresh launcher runs each measured command: ru_maxrss of a child that was forked
# from this (large) process would start at this process's RSS (Linux carries the pre-exec
# high-water mark over), so the launcher's own ~10 MiB is the floor instead.
# After each rep the next waits this long on a synced, idle machine: right after a run that
# wrote ~250 MB, the next run measured ~0.1-0.25 s slower (more CPU, not more I/O wait), and
# a cold install does not start a fraction of a second after such a write on a real host.
QUIET_S = 2.0

LAUNCHER = """
import json, os, resource, subprocess, sys, time
started = time.monotonic()
code = subprocess.call(sys.argv[2:])
wall = time.monotonic() - started
ru = resource.getrusage(resource.RUSAGE_CHILDREN)
with open(sys.argv[1], "w") as fh:
    json.dump([wall, ru.ru_utime, ru.ru_stime, ru.ru_maxrss, code], fh)
"""


def timed(
    argv: Sequence[str | Path],
    *,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    prefix: Sequence[str | Path] = (),
) -> Timed:
    """Run ``argv``; wall time, CPU and peak RSS (KiB) of this child and what it waits for.

    ``env`` adds to (or overrides) this process's environment; ``prefix`` runs the launcher
    itself under another command (e.g. ``unshare``), outside what is timed.
    """
    full_env = {
        **{k: v for k, v in os.environ.items() if k != "HAL0_SKIP_LEMONADE_SHA"},
        **(env or {}),
    }
    with (
        tempfile.TemporaryFile() as out,
        tempfile.TemporaryFile() as err,
        tempfile.NamedTemporaryFile("r", suffix=".json") as stats,
    ):
        launcher = [sys.executable, "-I", "-S", "-c", LAUNCHER, stats.name]
        subprocess.run(
            [*map(str, prefix), *launcher, *map(str, argv)],
            cwd=cwd,
            env=full_env,
            stdout=out,
            stderr=err,
            check=False,
        )
        wall, user, system, maxrss, code = json.load(stats)
        out.seek(0)
        err.seek(0)
        return Timed(
            float(wall),
            float(user),
            float(system),
            int(maxrss),
            int(code),
            out.read().decode(errors="replace"),
            err.read().decode(errors="replace"),
        )


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


Snapshot = dict[str, tuple[int, int, int, int, int]]


def snapshot(root: Path) -> Snapshot:
    """inode, mtime, ctime, size and mode of every file, dir and link under ``root``."""
    snap: Snapshot = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [*dirnames, *filenames]:
            path = Path(dirpath, name)
            st = path.lstat()
            snap[str(path.relative_to(root))] = (
                st.st_ino,
                st.st_mtime_ns,
                st.st_ctime_ns,
                st.st_size,
                st.st_mode,
            )
    return snap


def diff(before: Snapshot, after: Snapshot) -> list[str]:
    changes = [f"+ {p}" for p in after.keys() - before.keys()]
    changes += [f"- {p}" for p in before.keys() - after.keys()]
    changes += [f"~ {p}" for p in before.keys() & after.keys() if before[p] != after[p]]
    return sorted(changes)


def _chunks(path: Path, size: int = 1 << 20) -> list[bytes]:
    with path.open("rb") as fh:
        return list(iter(lambda: fh.read(size), b""))


class _Decompressor(Protocol):
    def decompress(self, data: bytes, /) -> bytes: ...


def inflate_seconds(path: Path, make: Callable[[], _Decompressor], reps: int = 3) -> float:
    """Median time to inflate the whole .gz in memory, output discarded (no writes)."""
    chunks = _chunks(path)
    times = []
    for _ in range(reps):
        started = time.monotonic()
        d = make()
        for chunk in chunks:
            d.decompress(chunk)
        times.append(time.monotonic() - started)
    return median(times)


def micro(path: Path, reps: int = 3) -> list[tuple[str, float]]:
    """Costs of the pieces of the data path, on the cached archive, in this process."""
    rows = [
        (
            "stdlib zlib inflate of the archive, no writes",
            inflate_seconds(path, lambda: zlib.decompressobj(31), reps),
        ),
    ]
    chunks = _chunks(path)
    times = []
    for _ in range(reps):
        started = time.monotonic()
        h = hashlib.sha256()
        for chunk in chunks:
            h.update(chunk)
        times.append(time.monotonic() - started)
    rows.append(("SHA-256 of the compressed archive", median(times)))
    d = zlib.decompressobj(31)
    hash_time = 0.0
    h = hashlib.sha256()
    for chunk in chunks:
        plain = d.decompress(chunk)
        started = time.monotonic()
        h.update(plain)
        hash_time += time.monotonic() - started
    rows.append(("SHA-256 of the unpacked bytes (the per-file manifest hashes)", hash_time))
    if importlib.util.find_spec("zlib_ng") is not None:  # a dependency; absent only by hand
        mod = importlib.import_module("zlib_ng.zlib_ng")
        make: Callable[[], _Decompressor] = functools.partial(mod.decompressobj, 31)
        rows.append(
            ("zlib-ng inflate (what archive.py uses), no writes", inflate_seconds(path, make, reps))
        )
    return rows


def create_ms(directory: Path, files: int = 300) -> float:
    """Milliseconds per empty-file create (O_CREAT|O_EXCL) in a fresh dir under ``directory``."""
    d = Path(tempfile.mkdtemp(prefix="creates-", dir=directory))
    try:
        started = time.monotonic()
        for i in range(files):
            os.close(os.open(d / f"f{i}", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        return (time.monotonic() - started) * 1000 / files
    finally:
        for i in range(files):
            (d / f"f{i}").unlink(missing_ok=True)
        d.rmdir()


def top_functions(
    stats_file: Path, limit: int = 12, *, cumulative: bool = False, only: str = ""
) -> list[tuple[str, int, float, float]]:
    """(function, calls, own time, cumulative time), heaviest own (or cumulative) time
    first; ``only``: functions whose file path holds this string.  Full precision (pstats'
    ``get_stats_profile`` rounds to milliseconds)."""
    stats: dict[tuple[str, int, str], tuple[int, int, float, float, object]] = getattr(
        pstats.Stats(str(stats_file)), "stats", {}
    )
    rows = []
    for (file_name, line, func), (_, ncalls, tottime, cumtime, _) in stats.items():
        if only not in file_name:
            continue
        short = file_name
        for marker in ("site-packages/", "src/", "lib/python3.11/"):
            if marker in short:
                short = short.split(marker, 1)[1]
        where = f"{short}:{line}({func})" if file_name != "~" else func
        rows.append((where, int(ncalls), float(tottime), float(cumtime)))
    rows.sort(key=lambda r: r[3] if cumulative else r[2], reverse=True)
    return rows[:limit]
