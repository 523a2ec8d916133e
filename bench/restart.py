"""Workload 3: a change that restarts lemond, under booted systemd 252, with the real lemond.

The booted suite's harness (tests/e2e/harness.py ``booted``) boots the Debian 12 root that
scripts/e2e-rootfs.sh builds and caches (under ``.cache/e2e``, or ``$HAL0_E2E_CACHE``) in
systemd-nspawn with ``--volatile=overlay``: the container writes to a tmpfs overlaid on the
cached root.  As in tests/e2e/conftest.py, the pyz and the real archives are bound in
read-only, the pyz is installed as README says (``install -m 0755 ... /usr/local/sbin``) and
runs on the root's own python3, and the real 10.6.0 is installed from its path (``--artifact
/real/...``) once, unmeasured beyond its wall time.

Then bench/health_poller.py runs inside as a transient unit, asking for health every 20 ms,
and each rep runs, in this order: ``install --threads 3`` (a config change: lemond is
restarted), ``systemctl restart hal0-lemonade`` (the daemon's own restart, the baseline),
``install --threads 2`` (a change back), and the same again (no change: nothing restarts).
Each is timed inside the container (``time.monotonic`` around the command, the clock the
poller stamps with); the next starts once health answers again and 0.3 s have passed.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

from tests.e2e import harness
from tests.e2e.conftest import ROOTFS_SCRIPT, cache_dir
from tests.e2e.harness import CLI, UNIT, Container, booted

from bench.context import PYZ, log
from bench.results import Action, RealArchive, RestartRun

SUITE = "bookworm"  # Debian 12, systemd 252
REAL_DIR = "/real"
POLLER = Path(__file__).with_name("health_poller.py")
POLL_LOG = "/run/bench-health.log"
POLL_PERIOD_S = 0.02
SETTLE_S = 0.3
# Timed inside the container: start and end on CLOCK_MONOTONIC, and the exit code.
TIMER = (
    "import json, subprocess, sys, time\n"
    "with open('/run/bench-action.out', 'w') as out:\n"
    "    s = time.monotonic()\n"
    "    c = subprocess.call(sys.argv[1:], stdout=out, stderr=subprocess.STDOUT)\n"
    "    e = time.monotonic()\n"
    "print(json.dumps([s, e, c]))\n"
)


def unavailable() -> str:
    if os.geteuid() != 0:
        return "not root (systemd-nspawn needs root)"
    if shutil.which("systemd-nspawn") is None and shutil.which("apt-get") is None:
        return "no systemd-nspawn, and no apt-get to install systemd-container"
    return ""


def rootfs() -> Path:
    """The booted suite's Debian 12 root (built once, then cached; progress on stderr)."""
    dest = cache_dir() / f"rootfs-{SUITE}"
    log(f"the Debian 12 root ({ROOTFS_SCRIPT.name}; a first build takes a minute or more) ...")
    done = subprocess.run(
        ["timeout", "900", str(ROOTFS_SCRIPT), str(dest), SUITE],
        stdout=subprocess.PIPE,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"{ROOTFS_SCRIPT} exited {done.returncode}")
    return Path(done.stdout.strip().splitlines()[-1])


def _timed(c: Container, argv: list[str]) -> tuple[float, float, int]:
    out = c.out(["python3", "-c", TIMER, *argv], timeout=120)
    start, end, code = json.loads(out.splitlines()[-1])
    if code != 0:
        detail = c.run(["cat", "/run/bench-action.out"], check=False).stdout
        raise SystemExit(f"inside the container, {argv} exited {code}:\n{detail}")
    return float(start), float(end), int(code)


def _polls(c: Container) -> list[tuple[float, float, bool]]:
    rows = []
    for line in c.read(POLL_LOG).splitlines():
        fields = line.split()
        if len(fields) == 3:
            rows.append((float(fields[0]), float(fields[1]), fields[2] == "1"))
    return rows


def _settle(c: Container, after: float) -> None:
    """Until the poller has an answer from after ``after``, then SETTLE_S more."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        tail = c.run(["tail", "-n", "3", POLL_LOG], check=False).stdout.splitlines()
        rows = [f.split() for f in tail]
        if any(len(r) == 3 and float(r[1]) > after and r[2] == "1" for r in rows):
            time.sleep(SETTLE_S)
            return
        time.sleep(0.05)
    raise SystemExit(f"lemond did not answer health again within 30 s\n{c.journal()}")


def action(kind: str, start: float, end: float, polls: list[tuple[float, float, bool]]) -> Action:
    """The health answers around [start, end]: the longest gap, when it was healthy again."""
    answers = [t for _, t, ok in polls if ok]
    before = [t for t in answers if t <= start]
    after = [t for t in answers if t > end]
    if not before or not after:
        raise SystemExit(f"{kind}: the poller has no answer before or after it")
    lo, hi = before[-1], after[0]
    window = [t for t in answers if lo <= t <= hi]
    gap = max((b - a for a, b in itertools.pairwise(window)), default=0.0)
    failed = [t for _, t, ok in polls if not ok and lo < t < hi]
    back = min((t for t in answers if failed and t > failed[-1]), default=start)
    return Action(kind, end - start, 0, gap, back - start, len(failed))


def run(root: Path, workdir: Path, real_dir: Path, real: RealArchive, reps: int) -> RestartRun:
    res = RestartRun(poll_period_ms=POLL_PERIOD_S * 1000)
    started = time.monotonic()
    binds = [(real_dir, REAL_DIR), (PYZ.parent, str(Path(harness.PYZ).parent))]
    with booted(root, workdir, binds_ro=binds) as c:
        res.boot_s = time.monotonic() - started
        c.run(["install", "-m", "0755", harness.PYZ, CLI])
        res.systemd = c.out(["systemctl", "--version"]).splitlines()[0]
        res.python = c.out(["python3", "--version"])
        res.where = c.out(["findmnt", "-no", "FSTYPE,OPTIONS", "/"])
        args = [
            "--version", real.version, "--artifact", f"{REAL_DIR}/{real.name}",
            "--sha256", real.sha256,
        ]  # fmt: skip
        s, e, _ = _timed(c, [CLI, "install", *args])
        res.first_install_s = e - s
        c.wait_healthy()
        c.run(["systemd-run", f"--unit=bench-health-poller-{reps}", "--quiet", "python3",
               "-c", POLLER.read_text(), POLL_LOG, str(POLL_PERIOD_S)])  # fmt: skip
        _settle(c, 0.0)
        steps = [
            ("install --threads 3", [CLI, "install", *args, "--threads", "3"]),
            ("systemctl restart", ["systemctl", "restart", UNIT]),
            ("install --threads 2", [CLI, "install", *args, "--threads", "2"]),
            ("install, no change", [CLI, "install", *args, "--threads", "2"]),
        ]
        windows: list[tuple[str, float, float]] = []
        for i in range(reps):
            for kind, argv in steps:
                s, e, _ = _timed(c, argv)
                _settle(c, e)
                windows.append((kind, s, e))
            log(
                f"restart rep {i + 1}/{reps}: "
                + ", ".join(f"{k} {e - s:.2f} s" for k, s, e in windows[-len(steps) :])
            )
        polls = _polls(c)
    res.actions = [action(kind, s, e, polls) for kind, s, e in windows]
    return res
