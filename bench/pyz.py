"""The one-file installer for workloads 2, 3 and 5: built by scripts/pyz, run by /usr/bin/python3.

Its code cache is ``/var/cache/hal0-lemonade-pyz`` (scripts/pyz_main.py), fixed, outside
any ``--root``.  So that a measured run finds exactly the cache it is meant to find, and on
the filesystem being measured, each one runs in a private mount namespace (``unshare
--mount``) with a dir of the bench's bound over ``/var/cache``: an empty one ("cold": the
cache is absent, as on a host's first run) or one a previous run unpacked into ("warm").
The host's own ``/var/cache`` is never touched.  The namespace is set up before the timed
launcher starts, so it costs the measurement nothing.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from bench.context import PYZ, REPO, SYSTEM_PYTHON, log

CACHE_NAME = "hal0-lemonade-pyz"


def unavailable() -> str:
    """Why the pyz cannot be measured here; empty when it can."""
    if os.geteuid() != 0:
        return "not root (the pyz unpacks its cache only as root, and unshare needs root)"
    if not SYSTEM_PYTHON.is_file():
        return f"no {SYSTEM_PYTHON}"
    missing = [t for t in ("unshare", "mount", "bash") if shutil.which(t) is None]
    return f"missing {', '.join(missing)}" if missing else ""


def build() -> str:
    """``bash scripts/pyz`` (reproducible; the wheels are fetched once); its SHA-256."""
    log("building dist/hal0-lemonade.pyz (bash scripts/pyz) ...")
    done = subprocess.run(
        ["bash", str(REPO / "scripts" / "pyz")], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise SystemExit(f"bash scripts/pyz exited {done.returncode}:\n{done.stderr[-3000:]}")
    if not PYZ.is_file():
        raise SystemExit(f"bash scripts/pyz did not write {PYZ}")
    return done.stdout.split()[0]


def var_cache(parent: Path, name: str) -> Path:
    """A new, empty stand-in for /var/cache (root's, 0755, as the pyz requires)."""
    path = parent / name
    path.mkdir(mode=0o755)
    path.chmod(0o755)
    return path


def prefix(var_cache_dir: Path) -> list[str]:
    """Runs what follows with ``var_cache_dir`` as /var/cache, in a private mount namespace."""
    return [
        "unshare", "--mount", "--propagation", "private", "--",
        "sh", "-c", 'mount --bind "$0" /var/cache && exec "$@"', str(var_cache_dir),
    ]  # fmt: skip


def argv(*args: str | Path) -> list[str | Path]:
    """The pyz as README runs it on a host: the host's own python3."""
    return [SYSTEM_PYTHON, PYZ, *args]


def unpacked(var_cache_dir: Path) -> bool:
    """Did a run unpack the pyz's code into this cache (one complete build dir)?"""
    return any((var_cache_dir / CACHE_NAME).glob("*/.complete"))
