"""Every refusal leaves an existing install byte-for-byte untouched, and says why in one line."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.integration.conftest import CLI, Served, snapshot
from tests.support.archives import (
    Member,
    release_members,
    sha256_of,
    symlink,
    top_dir_name,
    write_tar_gz,
)
from tests.support.archives import file as tar_file
from tests.support.attacker import readable_python
from tests.support.httpserver import HTTPTestServer

TOP = top_dir_name("10.7.0")


def _without(members: list[Member], rel: str) -> list[Member]:
    return [m for m in members if m.name != f"{TOP}/{rel}"]


HOSTILE: dict[str, tuple[Callable[[list[Member]], list[Member]], str]] = {
    "missing lemond": (lambda ms: _without(ms, "lemond"), "lemond is missing"),
    "missing defaults.json": (
        lambda ms: _without(ms, "resources/defaults.json"),
        "resources/defaults.json is missing",
    ),
    "escaping member": (
        lambda ms: [*ms, tar_file(f"{TOP}/../../etc/evil", "x")],
        "path traversal",
    ),
    "absolute member": (lambda ms: [*ms, tar_file("/etc/evil", "x")], "absolute path"),
    "escaping symlink": (
        lambda ms: [*ms, symlink(f"{TOP}/resources/up", "../../../etc")],
        "escapes the release tree",
    ),
}


@pytest.fixture
def hostile_url(http_server: HTTPTestServer, tmp_path: Path) -> Callable[[str], tuple[str, str]]:
    def build(case: str) -> tuple[str, str]:
        mutate, _ = HOSTILE[case]
        slug = case.replace(" ", "-")
        path = write_tar_gz(tmp_path / f"{slug}.tar.gz", mutate(release_members("10.7.0")))
        return http_server.add(f"/hostile/{path.name}", path), sha256_of(path)

    return build


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_archive_is_refused_and_changes_nothing(
    cli: CLI,
    installed: tuple[Path, Served],
    hostile_url: Callable[[str], tuple[str, str]],
    case: str,
) -> None:
    root, _ = installed
    url, digest = hostile_url(case)
    before = snapshot(root, dir_mtimes=False)
    run = cli(
        "install", "--root", root, "--version", "10.7.0",
        "--artifact", url, "--sha256", digest, "--json",
    )  # fmt: skip
    assert run.code == 1
    assert HOSTILE[case][1] in run.json["error"]
    assert run.step("Lemonade release")["status"] == "failed"
    after = snapshot(root, dir_mtimes=False)
    assert after == before
    assert not (root / "etc/evil").exists()


def test_digest_mismatch_is_refused_and_changes_nothing(
    cli: CLI, installed: tuple[Path, Served], served: Callable[..., Served]
) -> None:
    root, _ = installed
    newer = served("10.6.1")
    before = snapshot(root, dir_mtimes=False)
    wrong = "f" * 64
    run = cli(
        "install", "--root", root, "--version", "10.6.1",
        "--artifact", newer.url, "--sha256", wrong, "--json",
    )  # fmt: skip
    assert run.code == 1
    assert "SHA-256 mismatch" in run.json["error"]
    assert newer.release.sha256 in run.json["error"]
    assert snapshot(root, dir_mtimes=False) == before


def test_mismatch_is_refused_even_with_the_skip_variable(
    cli: CLI, installed: tuple[Path, Served], served: Callable[..., Served]
) -> None:
    root, _ = installed
    newer = served("10.6.1")
    before = snapshot(root, dir_mtimes=False)
    run = cli(
        "install", "--root", root, "--artifact", newer.url, "--sha256", "e" * 64, "--json",
        env={"HAL0_SKIP_LEMONADE_SHA": "1"},
    )  # fmt: skip
    assert run.code == 1
    assert "SHA-256 mismatch" in run.json["error"]
    assert snapshot(root, dir_mtimes=False) == before


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--threads", "1"], "'--threads': 1 is not in the range 2<=x<=1024"),
        (["--threads", "9999"], "'--threads': 9999 is not in the range 2<=x<=1024"),
        (["--sha256", "xyz"], "invalid --sha256"),
        (["--artifact", "x.tar.gz"], "--artifact needs --sha256"),
        (["--version", "9.9.9"], "has no pinned digest"),
        (["--version", "../../etc"], "invalid --version"),
        (["--bogus"], "No such option"),
        (["--threads", "many"], "is not a valid integer"),
    ],
)
def test_usage_errors_exit_2(cli: CLI, root: Path, args: list[str], message: str) -> None:
    run = cli("install", "--root", root, *args)
    assert run.code == 2
    assert message in run.err
    assert "Traceback" not in run.err
    assert list(root.iterdir()) == []


def test_malformed_http_timeout_is_a_usage_error(cli: CLI, root: Path) -> None:
    run = cli("install", "--root", root, env={"HAL0_LEMONADE_HTTP_TIMEOUT": "soon"})
    assert run.code == 2
    assert "HAL0_LEMONADE_HTTP_TIMEOUT='soon'" in run.err
    assert list(root.iterdir()) == []


def test_missing_root_is_a_usage_error(cli: CLI, tmp_path: Path) -> None:
    run = cli("install", "--root", tmp_path / "nope", "--dry-run")
    assert run.code == 2


def test_archive_of_another_version_is_refused(
    cli: CLI, installed: tuple[Path, Served], served: Callable[..., Served]
) -> None:
    root, _ = installed
    other = served("10.6.1")
    before = snapshot(root, dir_mtimes=False)
    run = cli(
        "install", "--root", root, "--version", "10.6.2", "--artifact", other.url,
        "--sha256", other.release.sha256, "--json",
    )  # fmt: skip
    assert run.code == 1
    assert "not Lemonade 10.6.2" in run.json["error"]
    assert snapshot(root, dir_mtimes=False) == before


def test_unreachable_artifact_names_the_step_and_a_hint(
    cli: CLI, installed: tuple[Path, Served], http_server: HTTPTestServer
) -> None:
    root, _ = installed
    before = snapshot(root, dir_mtimes=False)
    url = http_server.url("/missing.tar.gz")
    run = cli(
        "install", "--root", root, "--version", "10.6.1", "--artifact", url,
        "--sha256", "a" * 64,
    )  # fmt: skip
    assert run.code == 1
    # The failing step's line says what failed (once), the hint follows on stderr.
    failed = next(line for line in run.out.splitlines() if "Lemonade release" in line)
    assert " failed " in failed and "HTTP 404" in failed, run.out
    assert run.err.startswith("hint: check --version/--artifact"), run.err
    assert "HTTP 404" not in run.err  # not a second time
    assert "Traceback" not in run.err
    assert snapshot(root, dir_mtimes=False) == before


def _as_nobody(*args: str) -> subprocess.CompletedProcess[str]:
    # An interpreter nobody can run: pyenv's builds live under /root (0700).
    return subprocess.run(
        [readable_python(), "-m", "hal0_lemonade", *args],
        capture_output=True, text=True, check=False, user=65534, group=65534,
        env={"PATH": "/usr/bin:/bin", "LC_ALL": "C.UTF-8"},
    )  # fmt: skip


@pytest.mark.skipif(os.geteuid() != 0, reason="switching to an unprivileged user needs root")
def test_non_root_install_to_slash_says_use_sudo() -> None:
    done = _as_nobody("install", "--no-start")
    assert done.returncode == 1, done.stderr
    assert "sudo" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="switching to an unprivileged user needs root")
def test_non_root_dry_run_of_slash_works() -> None:
    done = _as_nobody("install", "--dry-run", "--no-start")
    assert done.returncode == 0, done.stderr
    assert "Dry run: nothing is changed" in done.stdout
