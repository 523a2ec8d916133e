"""Fixtures of the contract suite: every test runs against the stand-in and the real lemond.

``lemond`` is parametrised over (kind, version): the stand-in built by tests/support/archives.py
and the real release archives from $HAL0_REAL_LEMONADE, for 10.6.0 and 11.7.0.  A real case
whose archive is not there is skipped with the reason (shown by -ra); one whose digest does not
match its .sha256 fails, because running an unverified binary as root is never an option.

Every daemon gets its own cache dir, runtime dir, HOME and HTTP port, and is SIGKILLed in
teardown.  The real lemond takes WebSocket ports from 9000 up, so the tests run one at a time
(no xdist) and compute "the first free port" just before they start one.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.contract.daemon import Lemond, Running, port_bindable, wait_until
from tests.contract.spec import DEFAULT_PORT, TMP_LOG
from tests.support.archives import archive_name, build_release
from tests.support.httpserver import free_port

REAL_ENV = "HAL0_REAL_LEMONADE"
KINDS = ("standin", "real")
VERSIONS = ("10.6.0", "11.7.0")
CASES = [(kind, version) for kind in KINDS for version in VERSIONS]


@dataclass(frozen=True)
class Unavailable:
    reason: str
    fail: bool = False  # a broken promise (bad digest), not a missing archive


class Trees:
    """Extracted releases, one per (kind, version), built or verified once per session."""

    def __init__(self, factory: pytest.TempPathFactory) -> None:
        self.factory = factory
        self.made: dict[tuple[str, str], Lemond | Unavailable] = {}

    def get(self, kind: str, version: str) -> Lemond:
        key = (kind, version)
        if key not in self.made:
            self.made[key] = self._make(kind, version)
        made = self.made[key]
        if isinstance(made, Unavailable):
            if made.fail:
                pytest.fail(made.reason)
            pytest.skip(made.reason)
        return made

    def _make(self, kind: str, version: str) -> Lemond | Unavailable:
        if kind == "standin":
            archive = build_release(self.factory.mktemp(f"standin-{version}"), version).path
        else:
            found = real_archive(version)
            if isinstance(found, Unavailable):
                return found
            archive = found
        dest = self.factory.mktemp(f"{kind}-{version}-tree")
        subprocess.run(
            ["tar", "-xzf", archive, "--strip-components=1", "-C", dest],
            check=True,
            timeout=120,
        )
        lemond = Lemond(kind, version, dest / "lemond")
        # The real 11.x links libdrm: a host without it cannot run the case at all.
        probe = subprocess.run(
            [lemond.path, "--version"], capture_output=True, text=True, timeout=30, check=False
        )
        if probe.returncode != 0:
            why = (probe.stderr or probe.stdout).strip()
            return Unavailable(f"{lemond} cannot run on this host (exit {probe.returncode}): {why}")
        return lemond


def real_archive(version: str) -> Path | Unavailable:
    name = archive_name(version)
    root = os.environ.get(REAL_ENV, "")
    if not root:
        return Unavailable(
            f"{REAL_ENV} is not set: the real lemond {version} case needs a directory "
            f"holding {name} and {name}.sha256 (scripts/test points it at ../shared/lemonade)"
        )
    archive = Path(root) / name
    digest_file = archive.with_name(name + ".sha256")
    if not archive.is_file() or not digest_file.is_file():
        return Unavailable(f"{REAL_ENV}={root} lacks {name} or its .sha256: no real {version}")
    words = digest_file.read_text(encoding="utf-8").split()
    expected = words[0].lower() if words else ""
    digest = hashlib.sha256()
    with archive.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    if digest.hexdigest() != expected:
        return Unavailable(
            f"{archive}: sha256 {digest.hexdigest()} does not match {digest_file} ({expected!r})",
            fail=True,
        )
    return archive


@pytest.fixture(scope="session")
def trees(tmp_path_factory: pytest.TempPathFactory) -> Trees:
    return Trees(tmp_path_factory)


@pytest.fixture(params=CASES, ids=[f"{kind}-{version}" for kind, version in CASES])
def lemond(request: pytest.FixtureRequest, trees: Trees) -> Lemond:
    kind, version = request.param
    return trees.get(kind, version)


@pytest.fixture(params=KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    """For the tests that need both versions of one kind (an upgrade and back)."""
    value: str = request.param
    return value


DEFAULT = object()  # Launcher.start: a config with the test's host and a free port


class Launcher:
    """Starts daemons in fresh directories; the fixture kills whatever is left."""

    def __init__(self, lemond: Lemond | None, tmp_path: Path) -> None:
        self.lemond = lemond
        self.tmp_path = tmp_path
        self.started: list[Running] = []
        self.count = 0

    def workdir(self) -> Path:
        self.count += 1
        path = self.tmp_path / f"d{self.count}"
        path.mkdir()
        return path

    def env(self, work: Path, overrides: Mapping[str, str | None] | None) -> dict[str, str]:
        """PATH, HOME and XDG_RUNTIME_DIR of the test's own; None in overrides unsets."""
        (work / "home").mkdir(exist_ok=True)
        (work / "xdg").mkdir(exist_ok=True)
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(work / "home"),
            "XDG_RUNTIME_DIR": str(work / "xdg"),
        }
        for key, value in (overrides or {}).items():
            if value is None:
                env.pop(key, None)
            else:
                env[key] = value
        return env

    def _which(self, lemond: Lemond | None) -> Lemond:
        chosen = lemond or self.lemond
        assert chosen is not None, "no lemond given"
        return chosen

    def run(
        self,
        args: Sequence[str | os.PathLike[str]],
        *,
        lemond: Lemond | None = None,
        env: Mapping[str, str | None] | None = None,
        binary: Path | None = None,
        timeout: float = 30,
    ) -> subprocess.CompletedProcess[str]:
        """Run lemond to completion (for invocations that must not start a server)."""
        work = self.workdir()
        return subprocess.run(
            [binary or self._which(lemond).path, *args],
            env=self.env(work, env),
            cwd=work,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def start(
        self,
        config: Mapping[str, Any] | str | object | None = DEFAULT,
        *,
        lemond: Lemond | None = None,
        args: Sequence[str] = (),
        env: Mapping[str, str | None] | None = None,
        host: str = "127.0.0.1",
        port: int | None = None,
        cache: Path | None = None,
    ) -> Running:
        """Start lemond on ``cache`` (a new one by default).

        ``config``: a mapping (its host and port filled in from ``host``/``port`` unless it
        sets them; written with 4-space indents, unsorted, so a rewrite shows), raw text, or
        None for no config.json.  ``port`` is where the test expects HTTP (a free one unless
        given or set by the mapping).
        """
        chosen = self._which(lemond)
        work = self.workdir()
        if cache is None:
            cache = work / "cache"
            cache.mkdir()
        if config is DEFAULT:
            config = {}
        if isinstance(config, Mapping):
            settings = dict(config)
            settings.setdefault("host", host)
            settings.setdefault("port", free_port() if port is None else port)
            host, port = str(settings["host"]), int(settings["port"])
            (cache / "config.json").write_text(json.dumps(settings, indent=4), encoding="utf-8")
        elif isinstance(config, str):
            (cache / "config.json").write_text(config, encoding="utf-8")
        else:
            assert config is None, config
        if port is None:
            port = free_port()
        stdout, stderr = work / "stdout", work / "stderr"
        environ = self.env(work, env)
        with stdout.open("wb") as out, stderr.open("wb") as err:
            proc = subprocess.Popen(
                [chosen.path, *args, cache], env=environ, cwd=work, stdout=out, stderr=err
            )
        running = Running(chosen, proc, cache, host, port, stdout, stderr, environ)
        self.started.append(running)
        return running

    def close(self) -> None:
        for running in self.started:
            running.kill()


@pytest.fixture
def launcher(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Launcher]:
    # Tests parametrised over ``kind`` pick their lemond per call instead.
    chosen = request.getfixturevalue("lemond") if "lemond" in request.fixturenames else None
    launch = Launcher(chosen, tmp_path)
    try:
        yield launch
    finally:
        launch.close()


@pytest.fixture
def default_port() -> int:
    """lemond's built-in port, which a test needs when config.json is missing or broken."""

    def free() -> bool:
        return port_bindable("127.0.0.1", DEFAULT_PORT, reuse_port=True)

    with contextlib.suppress(AssertionError):
        wait_until(f"127.0.0.1:{DEFAULT_PORT} to be free", free, timeout=15)
    if not free():
        pytest.skip(f"127.0.0.1:{DEFAULT_PORT} is held by another process on this host")
    return DEFAULT_PORT


@pytest.fixture
def tmp_log() -> Iterator[Path]:
    """10.x's fallback log file; removed afterwards unless it was there before the test."""
    path = Path(TMP_LOG)
    existed = path.exists()
    yield path
    if not existed:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def copy_tree(lemond: Lemond, dest: Path) -> Path:
    """A copy of the release tree (a copy, not a link: lemond finds resources/ beside its
    resolved binary); returns the copied lemond."""
    shutil.copytree(lemond.path.parent, dest, symlinks=True)
    return dest / lemond.path.name
