"""Workload 4: the 200 MB release's data path, and where the installer's time goes in it.

``cold`` runs on every site: ``hal0-lemonade install --root R --no-start`` of the 200 MB
archive vs the seed's ``curl -o; sha256sum -c; tar -xzf`` (and the same followed by ``sync
-f``, the durability the installer pays for), interleaved.  The rest (phase breakdown,
what-if variants, start-up, peak RSS) runs once, on the fresh filesystem when there is one.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from bench import archive, measure
from bench.context import HAL0, PY, REPO, Site, check, fresh, log
from bench.measure import QUIET_S
from bench.results import DataRun, Extras

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


def install_args(root: Path, url: str, built: archive.Built) -> list[str | Path]:
    return [
        "install", "--root", root, "--no-start", "--artifact", url,
        "--sha256", built.sha256, "--version", built.version,
    ]  # fmt: skip


def install_argv(root: Path, url: str, built: archive.Built) -> list[str | Path]:
    return [HAL0, *install_args(root, url, built)]


def cold(site: Site, url: str, built: archive.Built, reps: int) -> DataRun:
    """Three sides interleaved: the pipeline, the pipeline + ``sync -f``, the installer."""
    res = DataRun(site)
    kinds = ("baseline", "installer", "synced")
    for i in range(reps):
        order = kinds[i % 3 :] + kinds[: i % 3]
        for kind in order:
            d = fresh(site.work, QUIET_S)
            if kind in ("baseline", "synced"):
                argv: list[str | Path] = ["bash", "-c", BASELINE, "bench", url, built.sha256, d]
                t = measure.timed([*argv, "sync"] if kind == "synced" else argv)
                check(t, "the shell pipeline")
                s = [float(x) for x in t.err.split()[-5:]]
                if kind == "baseline":
                    res.baseline.append(t)
                    res.baseline_stages.append((s[1] - s[0], s[2] - s[1], s[3] - s[2]))
                else:
                    res.baseline_synced.append(t)
                    res.sync_stage.append(s[4] - s[3])
            else:
                root = d / "root"
                root.mkdir()
                t = measure.timed(install_argv(root, url, built))
                check(t, "hal0-lemonade install")
                if not (root / "opt/lemonade/lemond").is_file():
                    raise SystemExit("hal0-lemonade install did not install lemond")
                res.installer.append(t)
            shutil.rmtree(d)
            log(f"200 MB, {site.label}, rep {i + 1}/{reps} {kind}: {t.wall:.2f} s")
    return res


def breakdown(ex: Extras, work: Path, url: str, built: archive.Built, reps: int) -> None:
    """The release step's phases, timed from inside (bench/probe.py), plus one profile."""
    for i in range(reps + 1):
        d = fresh(work, QUIET_S)
        (d / "root").mkdir()
        argv: list[str | Path] = [
            PY, "-m", "bench.probe", d / "root", url, built.sha256, built.version,
        ]  # fmt: skip
        profile = d / "cold.pstats"
        if i == reps:
            argv += ["--profile", profile]  # one extra, profiled run (slower; not timed)
        t = measure.timed(argv, cwd=REPO)
        check(t, "bench.probe")
        if i == reps:
            ex.profile_cold = measure.top_functions(profile)
        else:
            ex.breakdown.append(
                {**json.loads(t.out.splitlines()[-1]), "probe process wall": t.wall}
            )
        shutil.rmtree(d)
    log("breakdown done")


WHATIF = ["as is", "stdlib zlib", "no early sync", "no per-file hash", "no sync at all"]


def whatif(ex: Extras, work: Path, url: str, built: archive.Built, reps: int) -> None:
    """The release step in-process (probe.py), as it is and with one piece switched off."""
    for i in range(reps):
        for v in WHATIF:
            d = fresh(work, QUIET_S)
            (d / "root").mkdir()
            argv: list[str | Path] = [PY, "-m", "bench.probe", "--whatif", v, d / "root", url]
            t = measure.timed([*argv, built.sha256, built.version], cwd=REPO)
            check(t, f"what-if {v}")
            ex.whatif.setdefault(v, []).append(t)
            ex.whatif_step.setdefault(v, []).append(json.loads(t.out.splitlines()[-1])["step"])
            shutil.rmtree(d)
        log(f"what-if rep {i + 1}/{reps} done")


def startup(ex: Extras, reps: int) -> None:
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
    for _ in range(max(reps, 5)):
        for label, argv in cases.items():
            ex.startup.setdefault(label, []).append(measure.timed(argv).wall)


def rss(ex: Extras, work: Path, url: str, built: archive.Built, reps: int) -> None:
    for i in range(reps):
        d = fresh(work, QUIET_S)
        (d / "root").mkdir()
        t = measure.timed(install_argv(d / "root", url, built))
        check(t, "1 GiB install")
        ex.rss_1gib.append(t)
        shutil.rmtree(d)
        log(f"1 GiB rep {i + 1}/{reps}: {t.wall:.2f} s, peak RSS {t.maxrss_kib / 1024:.1f} MiB")
