"""``python -m bench``: every workload of issue 17, side by side, then BENCHMARKS.md.

1. real: the real Lemonade archive's whole install, the installer vs bench/seed_step.sh;
2. pyz: the same install from dist/hal0-lemonade.pyz, cold and warm, vs the venv;
3. restart: a restarting change under booted systemd with the real lemond (install wall time,
   the longest gap in health answers) and ``systemctl restart`` alone;
4. data: the 200 MB release's data path vs curl + sha256sum + tar;
5. noop: a re-run on a converged root (time, snapshot diff, write syscalls);
and the data path's extras: profile (phases, what-ifs, start-up), rss (1 GiB), health.
Workloads 1, 2, 4 and 5 run on the plain disk and on a fresh ext4 (``--fs``).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from tests.support.httpserver import HTTPTestServer

from bench import (
    archive,
    data,
    health_bench,
    machine,
    measure,
    noop,
    pyz,
    real,
    report,
    restart,
    scratchfs,
)
from bench.context import PY, REPO, Site, loadavg, log
from bench.results import Extras, RealArchive, Results

WORKLOADS = ("real", "pyz", "restart", "data", "noop")
EXTRAS = ("profile", "rss", "health")
DEFAULT_REPS = 7
SCRATCH_GIB = 6  # the 1 GiB archive's tree and cached download, and the converged roots
REAL_VERSION = "10.6.0"


def compile_package() -> None:
    """Write the package's bytecode, as ``pip install`` does (an editable install has none,
    and PYTHONDONTWRITEBYTECODE, set on some machines, keeps it stale after every edit)."""
    package = REPO / "src" / "hal0_lemonade"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    subprocess.run([PY, "-m", "compileall", "-q", str(package)], env=env, check=True)


def real_dir(given: Path | None) -> Path:
    if given is not None:
        return given
    env = os.environ.get("HAL0_REAL_LEMONADE")
    return Path(env) if env else (REPO.parent / "shared" / "lemonade")


def find_real(directory: Path) -> tuple[RealArchive | None, str]:
    """The real 10.6.0 archive in ``directory``, checked against its .sha256; or why not."""
    path = directory / f"lemonade-embeddable-{REAL_VERSION}-ubuntu-x64.tar.gz"
    digest_file = path.with_name(path.name + ".sha256")
    if not path.is_file() or not digest_file.is_file():
        return None, f"no {path.name} (+ .sha256) in {directory} (--real-dir)"
    expected = digest_file.read_text().split()[0]
    if hashlib.sha256(path.read_bytes()).hexdigest() != expected:
        raise SystemExit(f"{path} does not match {digest_file.name}")
    return RealArchive(path, REAL_VERSION, expected), ""


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add = p.add_argument
    add("--reps", type=int, default=DEFAULT_REPS, help=f"reps of everything ({DEFAULT_REPS})")
    names = ", ".join(WORKLOADS + EXTRAS)
    add("--only", default=",".join(WORKLOADS + EXTRAS), help=f"a comma-separated subset: {names}")
    add("--fs", default="plain,fresh", help="where workloads 1, 2, 4, 5 write: plain, fresh")
    add("--real-dir", type=Path, help="real archives ($HAL0_REAL_LEMONADE, ../shared/lemonade)")
    add("--rss-reps", type=int, default=3, help="1 GiB installs for peak RSS (3)")
    add("--health-samples", type=int, default=20, help="samples per variant (20)")
    add("--skip-1gib", action="store_true", help="the same as leaving rss out of --only")
    add("--cache-dir", type=Path, default=REPO / ".cache" / "bench")
    add("--output", type=Path, help="BENCHMARKS.md; a subset: .cache/bench/BENCHMARKS.partial.md")
    args = p.parse_args(argv)
    args.only = [w.strip() for w in args.only.split(",") if w.strip()]
    args.fs = [f.strip() for f in args.fs.split(",") if f.strip()]
    bad = set(args.only) - set(WORKLOADS + EXTRAS) | set(args.fs) - {"plain", "fresh"}
    if bad or args.reps < 1:
        p.error(f"unknown: {', '.join(sorted(bad))}" if bad else "--reps must be >= 1")
    if args.skip_1gib and "rss" in args.only:
        args.only.remove("rss")
    full = set(args.only) == set(WORKLOADS + EXTRAS) and len(set(args.fs)) == 2
    if args.output is None:
        args.output = REPO / "BENCHMARKS.md" if full else args.cache_dir / "BENCHMARKS.partial.md"
    return args


@contextlib.contextmanager
def sites(keys: list[str], cache: Path, res: Results) -> Iterator[list[Site]]:
    """The plain-disk dir and the fresh ext4 asked for, each with this run's work dir."""
    with contextlib.ExitStack() as stack:
        found: list[Site] = []
        for key in keys:
            if key == "plain":
                base, label = cache / "plain", "plain disk"
                base.mkdir(parents=True, exist_ok=True)
            else:
                mounted = stack.enter_context(scratchfs.scratch_fs(cache, SCRATCH_GIB, log))
                if mounted is None:
                    res.skipped["fresh ext4"] = scratchfs.unavailable() or "could not be made"
                    continue
                base, label = mounted, "fresh ext4"
            work = Path(tempfile.mkdtemp(prefix="work-", dir=base))
            stack.callback(shutil.rmtree, work, ignore_errors=True)
            found.append(Site(key, label, work, machine.filesystem(work), measure.create_ms(work)))
        yield found


@contextlib.contextmanager
def phase(res: Results, name: str) -> Iterator[None]:
    started = time.monotonic()
    try:
        yield
    finally:
        res.phases[name] = res.phases.get(name, 0.0) + time.monotonic() - started


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    cache: Path = args.cache_dir
    cache.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    res = Results(args.reps, args.only, machine.details())
    res.load.append(loadavg())
    compile_package()
    with sites(args.fs, cache, res) as where:
        res.sites = where
        _measure(args, res, cache)
    res.load.append(loadavg())
    text = report.render(res, time.monotonic() - started, " ".join(sys.argv[1:]))
    args.output.write_text(text)
    print(text)
    log(f"wrote {args.output} ({time.monotonic() - started:.0f} s)")
    return 0


def _measure(args: argparse.Namespace, res: Results, cache: Path) -> None:
    only = set(args.only)
    rdir = real_dir(args.real_dir)
    res.real_archive, why = find_real(rdir)
    if res.real_archive is None:
        for w in sorted(only & {"real", "pyz", "restart"}):
            res.skipped[w] = why
    why_pyz = pyz.unavailable()
    if why_pyz and only & {"pyz"}:
        res.skipped["pyz"] = why_pyz
    elif not why_pyz and only & {"pyz", "restart", "noop"} and res.real_archive is not None:
        with phase(res, "builds"):
            res.pyz_sha256 = pyz.build()
    with HTTPTestServer() as server:
        urls = Urls(server, res, cache, only)
        if res.real_archive is not None:
            _real(res, urls.real, only, why_pyz, args.reps)
        if "noop" in only:
            with phase(res, "noop"):
                _noop(res, urls, args.reps, use_pyz=not why_pyz)
        if "data" in only and urls.built is not None:
            with phase(res, "data"):
                res.data = [
                    data.cold(site, urls.small, urls.built, args.reps) for site in res.sites
                ]
        if only & {"profile", "rss"} and res.sites:
            with phase(res, "profile+rss"):
                _extras(args, res, server, urls)
    if "restart" in only and res.real_archive is not None:
        _restart(res, cache, rdir, args.reps)
    if "health" in only:
        log("health latency ...")
        with phase(res, "health"):
            res.extras = res.extras or Extras()
            res.extras.health = health_bench.run(args.health_samples)


class Urls:
    """What the bench's HTTP server on 127.0.0.1 serves (built first when needed)."""

    def __init__(self, server: HTTPTestServer, res: Results, cache: Path, only: set[str]) -> None:
        ra = res.real_archive
        self.real = server.add(f"/real/{ra.name}", ra.path) if ra is not None else ""
        self.small = ""
        self.built = None
        if only & {"data", "profile", "rss", "noop"}:
            with phase(res, "builds"):
                self.built = archive.build(archive.RELEASE_200MB, cache, log)
            res.archives["200MB"] = self.built
            self.small = server.add(f"/dl/{self.built.name}", self.built.path)


def _real(res: Results, url: str, only: set[str], why_pyz: str, reps: int) -> None:
    wanted = set()
    if "real" in only:
        wanted |= {"seed", "venv", "seed, host-like root", "venv, host-like root"}
    if "pyz" in only and not why_pyz:
        wanted |= {"venv", "pyz cold", "pyz warm"}
    sides = tuple(s for s in real.SIDES if s in wanted)
    if sides and res.real_archive is not None:
        with phase(res, "real+pyz"):
            res.real = [real.run(site, url, res.real_archive, reps, sides) for site in res.sites]


def _noop(res: Results, urls: Urls, reps: int, *, use_pyz: bool) -> None:
    ra, small = res.real_archive, urls.built
    for site in res.sites:
        warm = real.warm_cache(site.work, urls.real, ra) if ra is not None and use_pyz else None
        if ra is not None:
            args = functools.partial(real.install_args, url=urls.real, real=ra)
            res.noop.append(noop.run(site, "real 10.6.0", args, reps, warm))
        if small is not None:
            small_args = functools.partial(data.install_args, url=urls.small, built=small)
            res.noop.append(noop.run(site, "200 MB", small_args, reps, warm))


def _restart(res: Results, cache: Path, rdir: Path, reps: int) -> None:
    why = restart.unavailable()
    if why:
        res.skipped["restart"] = why
        return
    if res.real_archive is None or not res.pyz_sha256:
        res.skipped["restart"] = "no real archive or no pyz"
        return
    with phase(res, "restart"):
        root = restart.rootfs()
        logs = cache / "restart"
        logs.mkdir(exist_ok=True)
        res.restart = restart.run(root, logs, rdir, res.real_archive, reps)


def _extras(args: argparse.Namespace, res: Results, server: HTTPTestServer, urls: Urls) -> None:
    site = next((s for s in res.sites if s.key == "fresh"), res.sites[0])
    ex = res.extras = res.extras or Extras()
    ex.site = site.label
    if urls.built is None:
        return
    if "profile" in res.only:
        data.breakdown(ex, site.work, urls.small, urls.built, args.reps)
        data.whatif(ex, site.work, urls.small, urls.built, args.reps)
        data.startup(ex, args.reps)
        ex.micro = measure.micro(urls.built.path)
    if "rss" in res.only:
        big = archive.build(archive.RELEASE_1GIB, args.cache_dir, log)
        res.archives["1GiB"] = big
        data.rss(ex, site.work, server.add(f"/big/{big.name}", big.path), big, args.rss_reps)
