"""What every workload shares: the repo's paths, logging, fresh rep dirs, the sites."""

from __future__ import annotations

import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bench.measure import Timed

REPO = Path(__file__).resolve().parent.parent
VENV_BIN = REPO / ".venv" / "bin"
PY = VENV_BIN / "python"
HAL0 = VENV_BIN / "hal0-lemonade"
SEED_STEP = REPO / "bench" / "seed_step.sh"
PYZ = REPO / "dist" / "hal0-lemonade.pyz"
SYSTEM_PYTHON = Path("/usr/bin/python3")


def log(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def check(t: Timed, what: str) -> None:
    if t.code != 0:
        raise SystemExit(f"{what} failed (exit {t.code}):\n{t.out}\n{t.err}")


def fresh(work: Path, quiet: float) -> Path:
    """A new, empty rep dir under ``work``, after a sync and ``quiet`` seconds of rest, so
    that nobody pays for the previous rep's dirty pages."""
    os.sync()
    time.sleep(quiet)
    return Path(tempfile.mkdtemp(prefix="rep-", dir=work))


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


@dataclass(frozen=True)
class Site:
    """A filesystem the measured installs write to.

    ``plain``: a dir on the machine's own disk (the repo's ``.cache/bench/plain``);
    ``fresh``: a new journaled ext4 on a loop device (bench/scratchfs.py).
    """

    key: str
    label: str
    work: Path  # this run's work dir on it (removed at the end)
    filesystem: str  # type and source, from /proc/mounts
    create_ms: float  # what one empty-file create costs there, at the start
