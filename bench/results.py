"""What a run measured, workload by workload: filled by the workloads, read by the report."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.archive import Built
from bench.context import Site
from bench.measure import Timed

ProfileRow = tuple[str, int, float, float]  # function, calls, own time, cumulative time


@dataclass(frozen=True)
class HealthResult:
    """Measurement of bench/health_bench.py: one variant's samples."""

    mode: str
    samples_ms: list[float]


@dataclass(frozen=True)
class RealArchive:
    """A real Lemonade archive (``--real-dir``), checked against its .sha256."""

    path: Path
    version: str
    sha256: str

    @property
    def name(self) -> str:
        return self.path.name


@dataclass
class Timeline:
    """One install traced for process starts, exits and syncs (bench/timeline.py)."""

    wall: float = 0.0  # the traced run, from the installer's exec to its exit
    children: list[tuple[str, float, float]] = field(default_factory=list)  # argv, at, took
    syncs: dict[str, tuple[int, float]] = field(default_factory=dict)  # call: count, seconds
    sync_targets: list[tuple[str, int, float]] = field(default_factory=list)  # call+path, n, s
    code: int = 0


@dataclass
class RealRun:
    """Workloads 1 and 2 on one site: whole installs of the real archive, interleaved.

    ``sides``: "seed" (bench/seed_step.sh), "venv" (the venv's console script), "pyz cold"
    (the pyz with an empty code cache), "pyz warm" (the pyz with its cache unpacked).
    """

    site: Site
    sides: dict[str, list[Timed]] = field(default_factory=dict)
    timeline: Timeline | None = None  # one venv install under strace
    profile: list[ProfileRow] = field(default_factory=list)  # one venv install, cProfile


@dataclass
class DataRun:
    """Workload 4 on one site: the 200 MB release, installer vs curl + sha256sum + tar."""

    site: Site
    baseline: list[Timed] = field(default_factory=list)
    baseline_stages: list[tuple[float, float, float]] = field(default_factory=list)
    baseline_synced: list[Timed] = field(default_factory=list)
    sync_stage: list[float] = field(default_factory=list)
    installer: list[Timed] = field(default_factory=list)


@dataclass
class Extras:
    """Where the 200 MB install's time goes, peak RSS and health latency (one site)."""

    site: str = ""
    breakdown: list[dict[str, float]] = field(default_factory=list)
    startup: dict[str, list[float]] = field(default_factory=dict)
    whatif: dict[str, list[Timed]] = field(default_factory=dict)
    whatif_step: dict[str, list[float]] = field(default_factory=dict)
    micro: list[tuple[str, float]] = field(default_factory=list)
    profile_cold: list[ProfileRow] = field(default_factory=list)
    rss_1gib: list[Timed] = field(default_factory=list)
    health: list[HealthResult] = field(default_factory=list)


@dataclass
class Syscalls:
    """What one no-op run asked the kernel to change (strace -f of the whole process tree)."""

    file_writes: list[str] = field(default_factory=list)  # write-family calls on files
    changes: list[str] = field(default_factory=list)  # mkdir, rename, unlink, chmod, ...
    write_opens: list[str] = field(default_factory=list)  # opened for writing/creating
    syncs: list[str] = field(default_factory=list)  # fsync, fdatasync, syncfs, sync
    output_writes: int = 0  # writes to stdout, stderr, pipes and sockets
    processes: int = 1


@dataclass
class NoopRun:
    """Workload 5 on one site and one converged root: re-runs that must change nothing."""

    site: Site
    root: str  # which release converged it
    sides: dict[str, list[Timed]] = field(default_factory=dict)  # "venv", "pyz warm"
    changes: list[list[str]] = field(default_factory=list)
    files: int = 0
    steps: list[dict[str, Any]] = field(default_factory=list)
    syscalls: Syscalls | None = None
    no_strace: str = ""  # why there is no syscall count
    profile: list[ProfileRow] = field(default_factory=list)


@dataclass(frozen=True)
class Action:
    """One measured action under booted systemd, timed inside the container.

    ``gap``: the longest time between two successful health answers around it (the poller
    asks every 20 ms); ``healthy_after``: from its start to the first answer after the
    last failed one (0 when health never failed).
    """

    kind: str
    wall: float
    code: int
    gap: float
    healthy_after: float
    failed_polls: int


@dataclass
class RestartRun:
    """Workload 3: restarting changes under booted systemd 252 with the real lemond."""

    where: str = ""  # the container's root mount, as its findmnt sees it
    systemd: str = ""
    python: str = ""
    boot_s: float = 0.0
    first_install_s: float = 0.0
    actions: list[Action] = field(default_factory=list)
    poll_period_ms: float = 20.0


@dataclass
class Results:
    reps: int
    only: list[str]
    machine: list[tuple[str, str]] = field(default_factory=list)
    sites: list[Site] = field(default_factory=list)
    archives: dict[str, Built] = field(default_factory=dict)
    real_archive: RealArchive | None = None
    pyz_sha256: str = ""
    real: list[RealRun] = field(default_factory=list)
    data: list[DataRun] = field(default_factory=list)
    extras: Extras | None = None
    noop: list[NoopRun] = field(default_factory=list)
    restart: RestartRun | None = None
    skipped: dict[str, str] = field(default_factory=dict)  # workload -> why not run
    load: list[str] = field(default_factory=list)
    phases: dict[str, float] = field(default_factory=dict)  # workload -> seconds it took
