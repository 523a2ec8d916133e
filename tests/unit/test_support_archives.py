"""The release archive builder produces real, deterministic tarballs."""

from __future__ import annotations

import hashlib
import subprocess
import tarfile
import zlib
from pathlib import Path

import pytest

from tests.support.archives import (
    DEFAULTS_JSON,
    DEFAULTS_JSON_V11,
    FIXED_MTIME,
    Member,
    ReleaseFactory,
    build_release,
    directory,
    file,
    hardlink,
    release_members,
    sha256_of,
    symlink,
    truncated_copy,
    write_tar_gz,
)

TOP = "lemonade-embeddable-10.6.0-ubuntu-x64"


def test_layout_and_modes(tmp_path: Path) -> None:
    release = build_release(tmp_path)
    assert release.name == f"{TOP}.tar.gz"
    assert release.path == tmp_path / release.name
    assert release.top_dir == TOP
    with tarfile.open(release.path) as tar:
        infos = {info.name: info for info in tar.getmembers()}
        defaults = tar.extractfile(f"{TOP}/resources/defaults.json")
        assert defaults is not None
        assert defaults.read() == DEFAULTS_JSON.read_bytes()
    assert set(infos) == {
        TOP,
        f"{TOP}/lemond",
        f"{TOP}/lemonade",
        f"{TOP}/LICENSE",
        f"{TOP}/resources",
        f"{TOP}/resources/server_models.json",
        f"{TOP}/resources/backend_versions.json",
        f"{TOP}/resources/defaults.json",
    }
    assert infos[TOP].isdir()
    assert infos[f"{TOP}/resources"].isdir()
    assert infos[f"{TOP}/lemond"].mode == 0o755
    assert infos[f"{TOP}/lemonade"].mode == 0o755
    assert infos[f"{TOP}/LICENSE"].mode == 0o644
    assert all(i.uid == 0 and i.gid == 0 and i.mtime == FIXED_MTIME for i in infos.values())


def test_digest_is_stable_and_version_sensitive(tmp_path: Path) -> None:
    first = build_release(tmp_path / "a", padding_files=2, padding_bytes=50_000)
    second = build_release(tmp_path / "b", padding_files=2, padding_bytes=50_000)
    other = build_release(tmp_path / "c", "10.7.1", padding_files=2, padding_bytes=50_000)
    assert first.sha256 == second.sha256 == sha256_of(first.path)
    assert first.sha256 == hashlib.sha256(first.path.read_bytes()).hexdigest()
    assert other.sha256 != first.sha256
    assert other.name == "lemonade-embeddable-10.7.1-ubuntu-x64.tar.gz"


def test_padding_is_incompressible_and_split(tmp_path: Path) -> None:
    release = build_release(tmp_path, padding_files=3, padding_bytes=300_001)
    with tarfile.open(release.path) as tar:
        sizes = [i.size for i in tar.getmembers() if "/resources/padding/" in i.name]
    assert sorted(sizes) == [100_000, 100_000, 100_001]
    assert release.path.stat().st_size > 300_000


def test_extracted_binaries_answer_version(tmp_path: Path) -> None:
    release = build_release(tmp_path, "10.7.0", arch="ubuntu-arm64")
    assert release.name == "lemonade-embeddable-10.7.0-ubuntu-arm64.tar.gz"
    dest = tmp_path / "opt"
    dest.mkdir()
    subprocess.run(["tar", "-xzf", release.path, "--strip-components=1", "-C", dest], check=True)
    for binary in ("lemond", "lemonade"):
        out = subprocess.run(
            [dest / binary, "--version"], capture_output=True, text=True, check=False
        )
        assert (out.returncode, out.stdout) == (0, f"{binary} version 10.7.0\n")


@pytest.mark.parametrize(
    ("version", "defaults"),
    [("10.6.0", DEFAULTS_JSON), ("10.99.1", DEFAULTS_JSON), ("11.7.0", DEFAULTS_JSON_V11)],
)
def test_each_major_carries_its_own_defaults(tmp_path: Path, version: str, defaults: Path) -> None:
    release = build_release(tmp_path, version)
    with tarfile.open(release.path) as tar:
        member = tar.extractfile(f"{release.top_dir}/resources/defaults.json")
        assert member is not None
        assert member.read() == defaults.read_bytes()
    assert DEFAULTS_JSON.read_bytes() != DEFAULTS_JSON_V11.read_bytes()


def test_hostile_members_are_written_verbatim(tmp_path: Path) -> None:
    members = [
        *release_members(),
        file(f"{TOP}/../escape", "x"),
        file("/etc/evil", "x"),
        symlink(f"{TOP}/resources/link", "/etc"),
        hardlink(f"{TOP}/resources/hard", "/etc/passwd"),
        Member(f"{TOP}/kfd", kind="chardev", devmajor=1, devminor=3, mode=0o666),
        Member(f"{TOP}/sda", kind="blockdev", devmajor=8, devminor=0),
        Member(f"{TOP}/pipe", kind="fifo"),
        Member(f"{TOP}/suid", data=b"#!/bin/sh\n", mode=0o4755, uid=1000, gid=1000),
        file(f"{TOP}/LICENSE", "duplicate"),
        directory("second-top"),
    ]
    path = write_tar_gz(tmp_path / "hostile.tar.gz", members)
    with tarfile.open(path) as tar:
        infos = tar.getmembers()
    by_name = {i.name: i for i in infos}
    assert [i.name for i in infos].count(f"{TOP}/LICENSE") == 2
    assert f"{TOP}/../escape" in by_name
    assert "/etc/evil" in by_name
    assert by_name[f"{TOP}/resources/link"].issym()
    assert by_name[f"{TOP}/resources/link"].linkname == "/etc"
    assert by_name[f"{TOP}/resources/hard"].islnk()
    assert by_name[f"{TOP}/kfd"].ischr()
    assert (by_name[f"{TOP}/kfd"].devmajor, by_name[f"{TOP}/kfd"].devminor) == (1, 3)
    assert by_name[f"{TOP}/sda"].isblk()
    assert by_name[f"{TOP}/pipe"].isfifo()
    assert by_name[f"{TOP}/suid"].mode == 0o4755
    assert by_name[f"{TOP}/suid"].uid == 1000


def test_zero_fill_makes_a_small_bomb(tmp_path: Path) -> None:
    bomb = Member(f"{TOP}/resources/bomb.bin", fill_size=64 << 20)
    path = write_tar_gz(tmp_path / "bomb.tar.gz", [directory(TOP), bomb], compresslevel=1)
    assert path.stat().st_size < 1 << 20
    with tarfile.open(path) as tar:
        assert tar.getmember(bomb.name).size == 64 << 20


def test_truncated_copy(tmp_path: Path) -> None:
    release = build_release(tmp_path)
    size = release.path.stat().st_size
    half = truncated_copy(release.path, size // 2)
    assert half.stat().st_size == size // 2
    assert release.path.stat().st_size == size
    tail = truncated_copy(release.path, -10, tmp_path / "tail.tar.gz")
    assert tail.stat().st_size == size - 10
    with pytest.raises((tarfile.TarError, EOFError, zlib.error)), tarfile.open(half) as tar:
        tar.getmembers()


def test_release_factory_caches_and_copies(release_factory: ReleaseFactory) -> None:
    one = release_factory("10.6.0")
    two = release_factory("10.6.0", fail_at_start=True)
    assert one.path != two.path
    assert one.name == two.name
    assert one.sha256 != two.sha256
    again = release_factory("10.6.0")
    assert again.sha256 == one.sha256
    assert sha256_of(again.path) == one.sha256
