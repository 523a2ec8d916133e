"""Orchestration: build/cache archives, serve them on 127.0.0.1, run the four measurements."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support.httpserver import HTTPTestServer

from bench import archive, health_bench, machine, measure, report, scratchfs
from bench.archive import REPO
from bench.measure import QUIET_S, Timed, median

VENV_BIN = REPO / ".venv" / "bin"
PY = VENV_BIN / "python"
HAL0 = VENV_BIN / "hal0-lemonade"

BASELINE = r"""set -euo pipefail
url=$1 sha=$2 d=$3
t0=$EPOCHREALTIME
curl -fsS -o "$d/lemonade.tar.gz" "$url"
t1=$EPOCHREALTIME
echo "$sha  $d/lemonade.tar.gz" | sha256sum -c --quiet -
t2=$EPOCHREALTIME
mkdir "$d/lemonade"
tar -xzf "$d/lemonade.tar.gz" --strip-components=1 -C "$d/lemonade"
t3=$EPOCHREALTIME
if [ "${4:-}" = sync ]; then sync -f "$d/lemonade"; fi  # syncfs: what the installer pays for
t4=$EPOCHREALTIME
echo "$t0 $t1 $t2 $t3 $t4" >&2
"""


def log(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


@dataclass
class Results:
    reps: int
    machine: list[tuple[str, str]] = field(default_factory=list)
    archives: dict[str, archive.Built] = field(default_factory=dict)
    baseline: list[Timed] = field(default_factory=list)
    baseline_stages: list[tuple[float, float, float]] = field(default_factory=list)
    baseline_synced: list[Timed] = field(default_factory=list)
    sync_stage: list[float] = field(default_factory=list)
    installer: list[Timed] = field(default_factory=list)
    breakdown: list[dict[str, float]] = field(default_factory=list)
    startup: dict[str, list[float]] = field(default_factory=dict)
    noop: list[Timed] = field(default_factory=list)
    noop_changes: list[list[str]] = field(default_factory=list)
    noop_files: int = 0
    noop_steps: list[dict[str, Any]] = field(default_factory=list)
    rss_1gib: list[Timed] = field(default_factory=list)
    health: list[health_bench.HealthResult] = field(default_factory=list)
    micro: list[tuple[str, float]] = field(default_factory=list)
    profile_cold: list[tuple[str, int, float, float]] = field(default_factory=list)
    profile_noop: list[tuple[str, int, float, float]] = field(default_factory=list)
    whatif: dict[str, list[Timed]] = field(default_factory=dict)
    whatif_step: dict[str, list[float]] = field(default_factory=dict)
    load: list[str] = field(default_factory=list)
    creates: list[tuple[str, float]] = field(default_factory=list)


def _install_argv(root: Path, url: str, built: archive.Built, *extra: str) -> list[str | Path]:
    return [
        HAL0,
        "install",
        "--root",
        root,
        "--no-start",
        "--artifact",
        url,
        "--sha256",
        built.sha256,
        "--version",
        built.version,
        *extra,
    ]


def _check(t: Timed, what: str) -> None:
    if t.code != 0:
        raise SystemExit(f"{what} failed (exit {t.code}):\n{t.out}\n{t.err}")


SCRATCH_GIB = 6  # the 1 GiB archive's tree and cached download, and the converged root


def _fresh(work: Path) -> Path:
    os.sync()  # nobody pays for the previous run's dirty pages
    time.sleep(QUIET_S)
    return Path(tempfile.mkdtemp(prefix="rep-", dir=work))


def compile_package() -> None:
    """Write the package's bytecode, as ``pip install`` does (an editable install has none,
    and PYTHONDONTWRITEBYTECODE, set on some machines, keeps it stale after every edit)."""
    package = REPO / "src" / "hal0_lemonade"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    subprocess.run([PY, "-m", "compileall", "-q", str(package)], env=env, check=True)


def cold(res: Results, work: Path, url: str, built: archive.Built) -> Path:
    """Measurement 1, interleaved so drift hits both sides alike; returns a converged root.

    Three sides: the shell pipeline as the seed ran it, the same followed by ``sync -f`` of
    the tree (the durability the installer pays for), and the installer.
    """
    kept = work / "converged"
    kinds = ("baseline", "installer", "synced")
    for i in range(res.reps):
        order = kinds[i % 3 :] + kinds[: i % 3]
        for kind in order:
            d = _fresh(work)
            if kind in ("baseline", "synced"):
                argv: list[str | Path] = ["bash", "-c", BASELINE, "bench", url, built.sha256, d]
                t = measure.timed([*argv, "sync"] if kind == "synced" else argv)
                _check(t, "the shell pipeline")
                s = [float(x) for x in t.err.split()[-5:]]
                if kind == "baseline":
                    res.baseline.append(t)
                    res.baseline_stages.append((s[1] - s[0], s[2] - s[1], s[3] - s[2]))
                else:
                    res.baseline_synced.append(t)
                    res.sync_stage.append(s[4] - s[3])
                shutil.rmtree(d)
            else:
                root = d / "root"
                root.mkdir()
                t = measure.timed(_install_argv(root, url, built))
                _check(t, "hal0-lemonade install")
                if not (root / "opt/lemonade/lemond").is_file():
                    raise SystemExit("hal0-lemonade install did not install lemond")
                res.installer.append(t)
                if kept.exists():
                    shutil.rmtree(kept)
                d.rename(kept)
            log(f"cold rep {i + 1}/{res.reps} {kind}: {t.wall:.2f} s")
    return kept / "root"


def breakdown(res: Results, work: Path, url: str, built: archive.Built) -> None:
    for i in range(res.reps + 1):
        d = _fresh(work)
        (d / "root").mkdir()
        argv: list[str | Path] = [
            PY,
            "-m",
            "bench.probe",
            d / "root",
            url,
            built.sha256,
            built.version,
        ]
        profile = d / "cold.pstats"
        if i == res.reps:
            argv += ["--profile", profile]  # one extra, profiled run (slower; not timed)
        t = measure.timed(argv, cwd=REPO)
        _check(t, "bench.probe")
        if i == res.reps:
            res.profile_cold = measure.top_functions(profile)
        else:
            res.breakdown.append(
                {**json.loads(t.out.splitlines()[-1]), "probe process wall": t.wall}
            )
        shutil.rmtree(d)
    log("breakdown done")


WHATIF = ["as is", "stdlib zlib", "no early sync", "no per-file hash", "no sync at all"]


def whatif(res: Results, work: Path, url: str, built: archive.Built) -> None:
    """The release step in-process (probe.py), as it is and with one piece switched off."""
    for i in range(res.reps):
        for v in WHATIF:
            d = _fresh(work)
            (d / "root").mkdir()
            argv: list[str | Path] = [PY, "-m", "bench.probe", "--whatif", v, d / "root", url]
            t = measure.timed([*argv, built.sha256, built.version], cwd=REPO)
            _check(t, f"what-if {v}")
            res.whatif.setdefault(v, []).append(t)
            res.whatif_step.setdefault(v, []).append(json.loads(t.out.splitlines()[-1])["step"])
            shutil.rmtree(d)
        log(f"what-if rep {i + 1}/{res.reps} done")


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def startup(res: Results) -> None:
    cases: dict[str, list[str | Path]] = {
        "python -c pass": [PY, "-c", "pass"],
        "python -c 'import hal0_lemonade.cli'": [PY, "-c", "import hal0_lemonade.cli"],
        "python -c 'import hal0_lemonade.download'": [
            PY,
            "-c",
            "import hal0_lemonade.download",
        ],
        "hal0-lemonade --version": [HAL0, "--version"],
    }
    for _ in range(max(res.reps, 5)):
        for label, argv in cases.items():
            res.startup.setdefault(label, []).append(measure.timed(argv).wall)


def noop(res: Results, root: Path, url: str, built: archive.Built) -> None:
    _check(measure.timed(_install_argv(root, url, built)), "converging run")
    for _ in range(res.reps):
        before = measure.snapshot(root)
        t = measure.timed(_install_argv(root, url, built, "--json"))
        _check(t, "no-op run")
        after = measure.snapshot(root)
        res.noop.append(t)
        res.noop_changes.append(measure.diff(before, after))
        res.noop_files = len(after)
        res.noop_steps = json.loads(t.out)["steps"]
    prof = root.parent / "noop.pstats"
    argv = [
        PY,
        "-m",
        "bench.probe",
        "--noop",
        *_install_argv(root, url, built)[1:],
        "--profile",
        prof,
    ]
    _check(measure.timed(argv, cwd=REPO), "profiled no-op run")
    res.profile_noop = measure.top_functions(prof)
    log(f"no-op median {median([t.wall for t in res.noop]):.3f} s")


def rss(res: Results, work: Path, url: str, built: archive.Built, reps: int) -> None:
    for i in range(reps):
        d = _fresh(work)
        (d / "root").mkdir()
        t = measure.timed(_install_argv(d / "root", url, built))
        _check(t, "1 GiB install")
        res.rss_1gib.append(t)
        shutil.rmtree(d)
        log(f"1 GiB rep {i + 1}/{reps}: {t.wall:.2f} s, peak RSS {t.maxrss_kib / 1024:.1f} MiB")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    p.add_argument("--reps", type=int, default=5, help="repetitions per measurement (5)")
    p.add_argument("--rss-reps", type=int, default=3, help="1 GiB installs for peak RSS (3)")
    p.add_argument("--health-samples", type=int, default=20, help="samples per variant (20)")
    p.add_argument("--skip-1gib", action="store_true", help="skip the 1 GiB peak-RSS run")
    p.add_argument(
        "--work-dir",
        type=Path,
        default=None,
        help="where the measured installs and extractions write (default: a fresh ext4 on a "
        "loop device, see bench/scratchfs.py, else the cache dir); the report gives its "
        "filesystem and what one file create costs there",
    )
    p.add_argument("--cache-dir", type=Path, default=REPO / ".cache" / "bench")
    p.add_argument("--output", type=Path, default=REPO / "BENCHMARKS.md")
    args = p.parse_args(argv)

    cache: Path = args.cache_dir
    cache.mkdir(parents=True, exist_ok=True)
    compile_package()
    scratch: contextlib.AbstractContextManager[Path | None] = (
        scratchfs.scratch_fs(cache, SCRATCH_GIB, log)
        if args.work_dir is None
        else contextlib.nullcontext(None)
    )
    with scratch as mounted:
        work_dir: Path = args.work_dir or mounted or cache
        work_dir.mkdir(parents=True, exist_ok=True)
        return _measure(args, work_dir, cache)


def _measure(args: argparse.Namespace, work_dir: Path, cache: Path) -> int:
    work = Path(tempfile.mkdtemp(prefix="work-", dir=work_dir))
    res = Results(args.reps, machine.details(work))
    # What one file create costs where the reps write, and on the repo's own disk (see
    # bench/scratchfs.py for why the two can differ by 10x); each side creates 306 files.
    res.creates = [(str(work_dir), measure.create_ms(work))]
    if work_dir.resolve() != cache.resolve():
        res.creates.append((str(cache), measure.create_ms(cache)))
    started = time.monotonic()
    res.load.append(loadavg())
    try:
        small = archive.build(archive.RELEASE_200MB, cache, log)
        res.archives["200MB"] = small
        big = None if args.skip_1gib else archive.build(archive.RELEASE_1GIB, cache, log)
        if big is not None:
            res.archives["1GiB"] = big
        with HTTPTestServer() as server:
            url = server.add(f"/dl/{small.name}", small.path)
            converged = cold(res, work, url, small)
            breakdown(res, work, url, small)
            noop(res, converged, url, small)
            whatif(res, work, url, small)
            if big is not None:
                big_url = server.add(f"/big/{big.name}", big.path)
                rss(res, work, big_url, big, args.rss_reps)
        startup(res)
        res.micro = measure.micro(small.path)
        log("health latency ...")
        res.health = health_bench.run(args.health_samples)
        res.load.append(loadavg())
    finally:
        shutil.rmtree(work, ignore_errors=True)
    text = report.render(res, time.monotonic() - started, " ".join(sys.argv[1:]))
    args.output.write_text(text)
    print(text)
    log(f"wrote {args.output}")
    return 0
