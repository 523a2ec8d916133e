"""Workloads 1 and 2: the whole install of the real Lemonade archive, on a fresh sandbox root.

Four sides, interleaved rep by rep (the order rotates, so drift hits each alike), each
fetching the real archive from the bench's HTTP server on 127.0.0.1 into a fresh root on
the site being measured:

- ``seed``: ``bash bench/seed_step.sh ROOT URL SHA``, hal0's original bash step relocated
  under the root, its temp download dir (``mktemp -d``) on the same filesystem (TMPDIR);
- ``venv``: ``hal0-lemonade install --root ROOT --version V --artifact URL --sha256 SHA``,
  the venv's console script (all six steps; the service is enabled, not started);
- ``pyz cold``: the same command from dist/hal0-lemonade.pyz on /usr/bin/python3, its code
  cache absent (the pyz unpacks and compiles it, then syncs, then installs);
- ``pyz warm``: the same with the cache a previous run unpacked;
- ``seed, host-like root`` and ``venv, host-like root``: the first two on a root that holds
  what every Debian host already has (/etc with an accounts database that has the video and
  render groups, /etc/systemd/system/multi-user.target.wants, /opt, /var/lib, /var/cache,
  /run), so neither side pays for making a root's skeleton, and both add hal0 to the GPU
  groups as they would on a real host.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from bench import measure, pyz, syscalls, timeline
from bench.context import HAL0, PY, REPO, SEED_STEP, Site, check, fresh, log
from bench.measure import Timed
from bench.results import RealArchive, RealRun

SIDES = ("seed", "venv", "pyz cold", "pyz warm", "seed, host-like root", "venv, host-like root")
HOST_LIKE = "host-like root"
# What a Debian host's accounts database holds that matters here: root, and the GPU groups.
_ACCOUNTS = {
    "passwd": ("root:x:0:0:root:/root:/bin/bash\n", 0o644),
    "group": ("root:x:0:\nvideo:x:44:\nrender:x:105:\n", 0o644),
    "shadow": ("root:*:19000:0:99999:7:::\n", 0o640),
    "gshadow": ("root:*::\nvideo:*::\nrender:*::\n", 0o640),
}
_HOST_DIRS = ("etc/systemd/system/multi-user.target.wants", "opt", "var/lib", "var/cache", "run")


def host_like(root: Path) -> None:
    """Give ``root`` the skeleton of a Debian host (synced, before anything is timed)."""
    for d in _HOST_DIRS:
        (root / d).mkdir(parents=True, exist_ok=True)
    for name, (text, mode) in _ACCOUNTS.items():
        path = root / "etc" / name
        path.write_text(text)
        path.chmod(mode)
    os.sync()


# Between reps: a sync and this much rest (a rep writes ~10 MB, a 200 MB one needs 2 s).
QUIET_S = 0.5


def install_args(root: Path, url: str, real: RealArchive) -> list[str | Path]:
    return [
        "install", "--root", root, "--version", real.version, "--artifact", url,
        "--sha256", real.sha256,
    ]  # fmt: skip


def warm_cache(work: Path, url: str, real: RealArchive) -> Path:
    """A /var/cache stand-in with the pyz's code unpacked (by one unmeasured install)."""
    cache = work / "pyz-var-cache-warm"
    if pyz.unpacked(cache):
        return cache
    if not cache.exists():
        pyz.var_cache(work, cache.name)
    root = work / "pyz-warm-up-root"
    root.mkdir()
    t = measure.timed(pyz.argv(*install_args(root, url, real)), prefix=pyz.prefix(cache))
    check(t, "the pyz's warm-up install")
    shutil.rmtree(root)
    if not pyz.unpacked(cache):
        raise SystemExit(f"the pyz did not unpack its code into {cache}")
    return cache


def _one(side: str, rep: Path, url: str, real: RealArchive, warm: Path | None) -> Timed:
    root = rep / "root"
    root.mkdir()
    if side.endswith(HOST_LIKE):
        host_like(root)
        side = side.split(",", maxsplit=1)[0]
    if side == "seed":
        argv: list[str | Path] = ["bash", SEED_STEP, root, url, real.sha256]
        t = measure.timed(argv, env={"TMPDIR": str(rep)})
    elif side == "venv":
        t = measure.timed([HAL0, *install_args(root, url, real)])
    elif side == "pyz cold":
        cache = pyz.var_cache(rep, "var-cache")
        t = measure.timed(pyz.argv(*install_args(root, url, real)), prefix=pyz.prefix(cache))
        if t.code == 0 and not pyz.unpacked(cache):
            raise SystemExit("the cold pyz run did not unpack its code cache")
    else:
        if warm is None:
            raise AssertionError("no warm pyz cache")
        t = measure.timed(pyz.argv(*install_args(root, url, real)), prefix=pyz.prefix(warm))
    check(t, f"the real-archive install ({side})")
    wants = root / "etc/systemd/system/multi-user.target.wants/hal0-lemonade.service"
    if not (root / "opt/lemonade/lemond").is_file() or not wants.is_symlink():
        raise SystemExit(f"{side} exited 0 but did not install lemond and enable the unit")
    return t


def run(site: Site, url: str, real: RealArchive, reps: int, sides: tuple[str, ...]) -> RealRun:
    res = RealRun(site)
    warm = warm_cache(site.work, url, real) if "pyz warm" in sides else None
    for i in range(reps):
        order = sides[i % len(sides) :] + sides[: i % len(sides)]
        for side in order:
            rep = fresh(site.work, QUIET_S)
            t = _one(side, rep, url, real, warm)
            res.sides.setdefault(side, []).append(t)
            shutil.rmtree(rep)
        line = ", ".join(f"{s} {res.sides[s][-1].wall:.3f} s" for s in sides)
        log(f"real archive, {site.label}, rep {i + 1}/{reps}: {line}")
    if "venv" in sides:
        _where_time_goes(res, site, url, real)
    return res


def _where_time_goes(res: RealRun, site: Site, url: str, real: RealArchive) -> None:
    """One venv install under strace (children, syncs), one under cProfile (not timed)."""
    if not syscalls.unavailable():
        rep = fresh(site.work, QUIET_S)
        (rep / "root").mkdir()
        argv = [HAL0, *install_args(rep / "root", url, real)]
        res.timeline = timeline.trace(argv, {str(rep / "root"): "ROOT"})
        shutil.rmtree(rep)
    rep = fresh(site.work, QUIET_S)
    (rep / "root").mkdir()
    prof = rep / "real.pstats"
    probe = [PY, "-m", "bench.probe", "--cli", *install_args(rep / "root", url, real)]
    check(measure.timed([*probe, "--profile", prof], cwd=REPO), "the profiled real install")
    res.profile = measure.top_functions(prof, 16, cumulative=True, only="hal0_lemonade")
    shutil.rmtree(rep)
