"""Machine details for the report: CPU, cores, kernel, Python, filesystem, tools."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
import sys
import zlib
from pathlib import Path


def _first_line(argv: list[str]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, check=False).stdout
    except OSError:
        return "not found"
    return out.splitlines()[0] if out else "?"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def mem_total() -> str:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    except OSError:
        pass
    return "unknown"


def filesystem(path: Path) -> str:
    """Type and source of the mount holding ``path`` (longest /proc/mounts prefix)."""
    real = str(path.resolve())
    best = ("", "unknown", "?")
    try:
        for line in Path("/proc/mounts").read_text().splitlines():
            source, target, fstype = line.split()[:3]
            inside = real == target or real.startswith(target.rstrip("/") + "/")
            if inside and len(target) >= len(best[0]):
                best = (target, fstype, source)
    except OSError:
        pass
    journal = _journal(best[2]) if best[1] == "ext4" else ""
    return f"{best[1]}{journal} ({best[2]} on {best[0]})"


def _journal(source: str) -> str:
    """ ", journaled" / ", no journal" for an ext4 on a block device (jbd2 lists journals)."""
    jbd2 = Path("/proc/fs/jbd2")
    if not source.startswith("/dev/") or not jbd2.is_dir():
        return ""
    name = Path(source).name + "-"
    return (
        ", journaled" if any(e.name.startswith(name) for e in jbd2.iterdir()) else (", no journal")
    )


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def source_state() -> str:
    repo = Path(__file__).resolve().parent.parent
    head = _first_line(["git", "-C", str(repo), "rev-parse", "--short", "HEAD"])
    dirty = subprocess.run(
        ["git", "-C", str(repo), "diff", "--quiet", "HEAD", "--", "src"], check=False
    ).returncode
    src = _first_line(["git", "-C", str(repo), "log", "-1", "--format=%h", "--", "src"])
    return f"commit {head} (src/ last changed in {src})" + (
        " + uncommitted changes in src/" if dirty else ""
    )


def details() -> list[tuple[str, str]]:
    return [
        ("CPU", cpu_model()),
        ("Cores", f"{os.cpu_count()} online, {len(os.sched_getaffinity(0))} usable by this run"),
        ("Memory", mem_total()),
        ("Kernel", f"{platform.system()} {platform.release()}"),
        (
            "Python",
            f"{platform.python_implementation()} {sys.version.split()[0]} ({sys.executable})",
        ),
        ("zlib", f"{zlib.ZLIB_RUNTIME_VERSION}; zlib-ng (Python package) {_version('zlib-ng')}"),
        ("curl", " ".join(_first_line(["curl", "--version"]).split()[:2])),
        ("hal0-lemonade source", source_state()),
        ("tar", _first_line(["tar", "--version"])),
        ("strace", _first_line(["strace", "-V"])),
        (
            "systemd-nspawn (host)",
            " ".join(_first_line(["systemd-nspawn", "--version"]).split()[:2]),
        ),
    ]
