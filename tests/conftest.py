"""Shared fixtures. Keep one section per support module; append new sections below."""

from __future__ import annotations

import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from tests.support.archives import FAKE_LEMOND, Member, Release, ReleaseFactory, build_release
from tests.support.httpserver import HTTPTestServer, ProxyServer

# --- loopback HTTP ------------------------------------------------------------------------


@pytest.fixture
def http_server() -> Iterator[HTTPTestServer]:
    with HTTPTestServer() as server:
        yield server


@pytest.fixture
def proxy_server() -> Iterator[ProxyServer]:
    with ProxyServer() as proxy:
        yield proxy


# --- release archives ---------------------------------------------------------------------


_ReleaseKey = tuple[str, str, bool, int, int, tuple[Member, ...]]


@pytest.fixture(scope="session")
def _release_cache() -> dict[_ReleaseKey, Release]:
    return {}


@pytest.fixture
def release_factory(
    tmp_path: Path,
    tmp_path_factory: pytest.TempPathFactory,
    _release_cache: dict[_ReleaseKey, Release],
) -> ReleaseFactory:
    """Build a release once per session and hand each test its own copy in tmp_path/releases.

    The copy means a test may truncate or corrupt its archive without affecting others.
    """

    def make(
        version: str = "10.6.0",
        *,
        arch: str = "ubuntu-x64",
        fail_at_start: bool = False,
        padding_files: int = 0,
        padding_bytes: int = 0,
        extra_members: Sequence[Member] = (),
    ) -> Release:
        key = (version, arch, fail_at_start, padding_files, padding_bytes, tuple(extra_members))
        cached = _release_cache.get(key)
        if cached is None:
            cached = build_release(
                tmp_path_factory.mktemp("release"),
                version,
                arch=arch,
                fail_at_start=fail_at_start,
                padding_files=padding_files,
                padding_bytes=padding_bytes,
                extra_members=extra_members,
            )
            _release_cache[key] = cached
        # Same name twice in one test (other options): later copies go to releases-1, -2...
        dest = tmp_path / "releases" / cached.name
        for n in range(1, 1000):
            if not dest.exists():
                break
            dest = tmp_path / f"releases-{n}" / cached.name
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(cached.path, dest)
        return Release(dest, cached.sha256, version, cached.name, arch, cached.members)

    return make


# --- fake lemond --------------------------------------------------------------------------


@pytest.fixture(scope="session")
def fake_lemond_path() -> Path:
    """The unbaked fake_lemond.py template (runnable as is: VERSION "0.0.0+unbaked")."""
    return FAKE_LEMOND
