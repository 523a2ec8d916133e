"""Fixtures for the booted-systemd suite (``pytest -m e2e``).

One session fixture per Debian release prepares what a boot needs: the bootable root
(scripts/e2e-rootfs.sh, cached), the release archives (tests/support/archives.py) and the
one-file installer (scripts/pyz), bound in read-only. Each boot installs the pyz at
/usr/local/sbin/hal0-lemonade, as README tells an operator, runs it with the root's own
``python3``, and serves the archives over real HTTP from inside the container, so the
installer downloads them like it would in production.

Without root (or with no way to get systemd-nspawn) the suite skips with the reason, but
with ``CI`` set in the environment it fails instead, so CI can never pass without booting
systemd. A root that cannot be built is always a failure.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.e2e.harness import (
    ARTIFACT_PORT,
    CLI,
    EMBED,
    PYZ,
    RELEASES,
    UNIT,
    Container,
    booted,
)
from tests.support.archives import Release, build_release

PROJECT_DIR = Path(__file__).resolve().parents[2]
ROOTFS_SCRIPT = PROJECT_DIR / "scripts" / "e2e-rootfs.sh"
BASE_VERSION = "10.6.0"
UPGRADE_VERSION = "10.6.1"
BROKEN_UPGRADE_VERSION = "10.6.2"
# Wall times of the expensive steps, printed in the terminal summary.
TIMINGS: dict[str, float] = {}
# Other measurements worth a line in the summary (e.g. the unit's exposure score).
MEASURED: dict[str, str] = {}


def unavailable(reason: str) -> None:
    """Skip outside CI; in CI the suite must run, so this is a failure."""
    if os.environ.get("CI"):
        pytest.fail(f"the e2e suite cannot run in CI: {reason}", pytrace=False)
    pytest.skip(reason)


def cache_dir() -> Path:
    return Path(os.environ.get("HAL0_E2E_CACHE") or PROJECT_DIR / ".cache" / "e2e")


@dataclass(frozen=True)
class Releases:
    """The archives served inside every container at http://127.0.0.1:ARTIFACT_PORT/."""

    directory: Path
    base: Release  # 10.6.0, the pinned version
    upgrade: Release  # 10.6.1
    broken: Release  # 10.6.0 whose lemond exits 1 at start
    broken_upgrade: Release  # 10.6.2 whose lemond exits 1 at start

    def url(self, release: Release) -> str:
        return f"http://127.0.0.1:{ARTIFACT_PORT}/{release.path.relative_to(self.directory)}"

    def args(self, release: Release) -> list[str]:
        """The install flags that point the installer at ``release``."""
        return [
            "--version",
            release.version,
            "--artifact",
            self.url(release),
            "--sha256",
            release.sha256,
        ]


REAL_ENV = "HAL0_REAL_LEMONADE"
REAL_DIR = "/real"  # where the real archives are bound inside every container


@dataclass(frozen=True)
class RealRelease:
    """A real Lemonade archive (``$HAL0_REAL_LEMONADE``), verified against its .sha256."""

    version: str
    name: str
    sha256: str

    def args(self) -> list[str]:
        return [
            "--version", self.version, "--artifact", f"{REAL_DIR}/{self.name}",
            "--sha256", self.sha256,
        ]  # fmt: skip


def real_releases() -> tuple[Path | None, dict[str, RealRelease], str]:
    """The real archives found through ``$HAL0_REAL_LEMONADE``, and why none when empty."""
    raw = os.environ.get(REAL_ENV, "")
    if not raw:
        return None, {}, f"{REAL_ENV} is not set (a directory of real Lemonade archives)"
    directory = Path(raw)
    found: dict[str, RealRelease] = {}
    for digest_file in sorted(directory.glob("lemonade-embeddable-*-ubuntu-x64.tar.gz.sha256")):
        archive = digest_file.with_suffix("")
        expected = digest_file.read_text().split()[0]
        actual = hashlib.sha256(archive.read_bytes()).hexdigest()
        if actual != expected:
            pytest.fail(f"{archive} does not match {digest_file.name}", pytrace=False)
        version = archive.name.removeprefix("lemonade-embeddable-").split("-ubuntu")[0]
        found[version] = RealRelease(version, archive.name, expected)
    return directory, found, "" if found else f"no real archives in {directory}"


@dataclass(frozen=True)
class E2E:
    suite: Suite
    pyz: Path  # dist/hal0-lemonade.pyz, built by scripts/pyz

    @property
    def pyz_sha256(self) -> str:
        return hashlib.sha256(self.pyz.read_bytes()).hexdigest()

    rootfs: Path
    releases: Releases
    workdir: Path
    real_dir: Path | None = None
    real: dict[str, RealRelease] | None = None
    real_missing: str = ""

    def real_release(self, version: str) -> RealRelease:
        """The real archive of ``version``; the test is skipped, saying why, without it."""
        if not self.real or version not in self.real:
            # Skipped, not failed, even in CI: the reason is printed with -ra (addopts).
            pytest.skip(self.real_missing or f"no real Lemonade {version} in {self.real_dir}")
        return self.real[version]

    @contextlib.contextmanager
    def boot(self, rootfs: Path | None = None, *, volatile: bool = True) -> Iterator[Container]:
        """Boot (an overlay over) the root with the pyz and the releases bound in."""
        started = time.monotonic()
        with booted(
            rootfs or self.rootfs,
            self.workdir,
            volatile=volatile,
            binds_ro=[
                (self.releases.directory, RELEASES),
                *([(self.real_dir, REAL_DIR)] if self.real_dir is not None else []),
                (self.pyz.parent, str(Path(PYZ).parent)),
            ],
        ) as container:
            container.run(["install", "-m", "0755", PYZ, CLI])
            # It runs on the root's python3 (from the zip: only a changing command unpacks
            # it into /var/cache/hal0-lemonade-pyz, which the dry-run scenarios watch).
            container.run([CLI, "--version"])
            serve_releases(container)
            TIMINGS[f"boot {container.name}"] = time.monotonic() - started
            yield container


def serve_releases(container: Container) -> None:
    """``python3 -m http.server`` on 127.0.0.1 inside, as a transient unit."""
    container.run(
        [
            "systemd-run",
            "--unit=e2e-releases",
            "--quiet",
            "python3",
            "-m",
            "http.server",
            "--bind",
            "127.0.0.1",
            "--directory",
            RELEASES,
            str(ARTIFACT_PORT),
        ]
    )
    container.wait_for(
        "the release server",
        lambda: (
            container.run(
                ["curl", "-fsS", "-o", "/dev/null", f"http://127.0.0.1:{ARTIFACT_PORT}/"],
                check=False,
            ).returncode
            == 0
        ),
        timeout=15,
    )


@dataclass(frozen=True)
class Suite:
    """A Debian or Ubuntu release the booted suite runs on, and what it ships."""

    name: str  # debootstrap's suite name
    distro: str
    systemd: str  # the major version `systemctl --version` prints
    python: str  # the major.minor of its /usr/bin/python3


SUITES = (
    Suite("bookworm", "Debian 12", "252", "3.11"),
    Suite("trixie", "Debian 13", "257", "3.13"),
    Suite("noble", "Ubuntu 24.04", "255", "3.12"),
)


def _chosen_suites() -> tuple[Suite, ...]:
    """All of them, or those HAL0_E2E_SUITES names (scripts/test leaves Ubuntu out when its
    archive is out of reach, and says so)."""
    names = [n for n in os.environ.get("HAL0_E2E_SUITES", "").split(",") if n]
    if not names:
        return SUITES
    unknown = set(names) - {s.name for s in SUITES}
    if unknown:
        raise pytest.UsageError(f"HAL0_E2E_SUITES: unknown {sorted(unknown)}")
    return tuple(s for s in SUITES if s.name in names)


CHOSEN = _chosen_suites()


def _build_rootfs(suite: Suite) -> Path:
    dest = cache_dir() / f"rootfs-{suite.name}"
    result = subprocess.run(
        ["timeout", "900", str(ROOTFS_SCRIPT), str(dest), suite.name],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        # A failure, never a skip: root is here, so the suite could run and must.
        # (Deselect with -m "not e2e" on a machine that cannot reach the Debian mirror.)
        pytest.fail(
            f"{ROOTFS_SCRIPT.name} {dest} exited {result.returncode}:\n{result.stderr[-3000:]}",
            pytrace=False,
        )
    return Path(result.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="session", params=CHOSEN, ids=[s.name for s in CHOSEN])
def e2e(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> E2E:
    """A booted-systemd environment on one Debian release (every e2e test runs on each)."""
    suite: Suite = request.param
    if sys.platform != "linux":
        unavailable("systemd-nspawn needs Linux")
    if os.geteuid() != 0:
        unavailable("booting systemd with systemd-nspawn needs root")
    if shutil.which("systemd-nspawn") is None and shutil.which("apt-get") is None:
        unavailable("systemd-nspawn is missing and apt-get cannot install systemd-container")
    started = time.monotonic()
    workdir = tmp_path_factory.mktemp("e2e")
    releases_dir = workdir / "releases"
    releases = Releases(
        directory=releases_dir,
        base=build_release(releases_dir, BASE_VERSION),
        upgrade=build_release(releases_dir, UPGRADE_VERSION),
        broken=build_release(releases_dir / "broken", BASE_VERSION, fail_at_start=True),
        broken_upgrade=build_release(
            releases_dir / "broken", BROKEN_UPGRADE_VERSION, fail_at_start=True
        ),
    )
    rootfs = _build_rootfs(suite)
    TIMINGS[f"{suite.name} rootfs ready"] = time.monotonic() - started
    if shutil.which("systemd-nspawn") is None:
        unavailable("systemd-nspawn is still missing after scripts/e2e-rootfs.sh")
    real_dir, real, missing = real_releases()
    pyz = _build_pyz(workdir)
    TIMINGS[f"{suite.name} prepare total"] = time.monotonic() - started
    return E2E(suite, pyz, rootfs, releases, workdir, real_dir, real, missing)


def _build_pyz(workdir: Path) -> Path:
    """The one-file installer, from this checkout (scripts/pyz: reproducible, pinned)."""
    done = subprocess.run(
        ["bash", str(PROJECT_DIR / "scripts/pyz")], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        pytest.fail(f"scripts/pyz exited {done.returncode}:\n{done.stderr[-3000:]}", pytrace=False)
    pyz_dir = workdir / "pyz"
    pyz_dir.mkdir(exist_ok=True)
    target = pyz_dir / "hal0-lemonade.pyz"
    shutil.copyfile(PROJECT_DIR / "dist/hal0-lemonade.pyz", target)
    shutil.copyfile(PROJECT_DIR / "deploy/embed/lemonade-step.sh", pyz_dir / Path(EMBED).name)
    return target


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if TIMINGS:
        line = ", ".join(f"{name} {seconds:.1f}s" for name, seconds in TIMINGS.items())
        terminalreporter.write_line(f"e2e timings: {line}")
    for name, value in MEASURED.items():
        terminalreporter.write_line(f"e2e measured: {name}: {value}")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """On failure, attach the unit's journal from every container the test used."""
    report = yield
    if report.when == "call" and report.failed:
        funcargs = getattr(item, "funcargs", {})
        for value in funcargs.values():
            if isinstance(value, Container) and value.process.poll() is None:
                with contextlib.suppress(Exception):
                    report.sections.append(
                        (f"journal of {UNIT} in {value.name}", value.journal(lines=80))
                    )
    return report
