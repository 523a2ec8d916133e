"""How many CPUs this process may really use, and the llama.cpp thread count derived from it.

``os.cpu_count()`` reports the machine; a container or a systemd slice often gets less,
through the CPU affinity mask or a cgroup CPU quota.  The thread rule is hal0's:
``N = max(2, (cpus - 2) // 4)``: ``-2`` leaves room for hal0's API and the system, ``/4``
splits the rest across the usual four llama-server children (chat, embedding, reranking,
voice); with each child spawning a thread per core, the Vulkan dispatch starves and inference
hangs.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import NamedTuple

MIN_THREADS = 2
FALLBACK_THREADS = 2


class CpuBudget(NamedTuple):
    cpus: int | None  # None when nothing could be read
    source: str  # human description of where the number came from


def parse_cgroup2_max(text: str) -> float | None:
    """``cpu.max`` holds ``"<quota> <period>"`` or ``"max <period>"``."""
    parts = text.split()
    if len(parts) != 2 or parts[0] == "max":
        return None
    quota, period = int(parts[0]), int(parts[1])
    return quota / period if quota > 0 and period > 0 else None


def parse_cgroup1_quota(quota_text: str, period_text: str) -> float | None:
    quota, period = int(quota_text.strip()), int(period_text.strip())
    return quota / period if quota > 0 and period > 0 else None


def _cgroup_quota(sys_root: Path, proc_root: Path) -> float | None:
    """The CPU quota of this process's cgroup, in CPUs, or None when unlimited/unknown."""
    try:
        lines = (proc_root / "self/cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        hier, controllers, path = [*line.split(":", 2), "", ""][:3]
        rel = path.lstrip("/")
        try:
            if hier == "0" and controllers == "":
                return parse_cgroup2_max((sys_root / "fs/cgroup" / rel / "cpu.max").read_text())
            if "cpu" in controllers.split(","):
                base = sys_root / "fs/cgroup/cpu,cpuacct"
                if not base.exists():
                    base = sys_root / "fs/cgroup/cpu"
                return parse_cgroup1_quota(
                    (base / rel / "cpu.cfs_quota_us").read_text(),
                    (base / rel / "cpu.cfs_period_us").read_text(),
                )
        except (OSError, ValueError):
            continue
    return None


def detect(sys_root: Path = Path("/sys"), proc_root: Path = Path("/proc")) -> CpuBudget:
    try:
        affinity = len(os.sched_getaffinity(0))
    except OSError:
        affinity = os.cpu_count() or 0
    if affinity <= 0:
        return CpuBudget(None, "no CPU count could be read")
    quota = _cgroup_quota(sys_root, proc_root)
    if quota is not None and math.ceil(quota) < affinity:
        return CpuBudget(max(1, math.ceil(quota)), f"cgroup CPU quota {quota:g}")
    return CpuBudget(affinity, "CPU affinity")


def threads_for(cpus: int) -> int:
    return max(MIN_THREADS, (cpus - 2) // 4)
