"""Upgrading 10.x -> 11.x and back, with the stand-in taught 11.x's config migration.

11.x migrates a config.json below version 2 at start (and rewrites it with its defaults); a
10.x started on a migrated file broadcasts.  The installer renders the locked intent in the
schema of the release it installs, keeps the config each release ran with beside it, and
restores it on a switch.  The stand-in is contract-tested against the real 10.6.0 and 11.7.0
(tests/contract), so what it does to the file here is what lemond does.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from hal0_lemonade import health
from tests.contract.daemon import sockets_of
from tests.integration.conftest import CLI, Run, Served, install_args, snapshot
from tests.support.archives import (
    Member,
    archive_name,
    file,
    release_members,
    sha256_of,
    top_dir_name,
    write_tar_gz,
)

CONFIG = "var/lib/hal0/lemonade/config.json"
RELEASES = "opt/lemonade.releases"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.fixture
def port_root(root: Path) -> Path:
    """A root whose lemond listens on a port of its own (tests run side by side)."""
    (root / "etc/hal0").mkdir(parents=True)
    (root / "etc/hal0/lemonade.toml").write_text(f"port = {_free_port()}\n")
    return root


def _config(root: Path) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((root / CONFIG).read_text())
    return doc


def _run_daemon(root: Path) -> list[str]:
    """Start the installed lemond on the installed config as a service would, wait until it
    answers, stop it with SIGTERM; the addresses of its UDP sockets on any interface."""
    port = _config(root)["port"]
    with tempfile.TemporaryDirectory() as runtime:
        env = {"PATH": os.environ["PATH"], "HOME": runtime, "RUNTIME_DIRECTORY": runtime}
        daemon = subprocess.Popen(
            [root / "opt/lemonade/lemond", root / "var/lib/hal0/lemonade"],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            assert health.wait_healthy("127.0.0.1", port, timeout=15) is not None
            on_any = [
                f"{s.address}:{s.port}" for s in sockets_of(daemon.pid) if s.proto.startswith("udp")
            ]
        finally:
            daemon.send_signal(signal.SIGTERM)
            daemon.wait(timeout=15)
    return on_any


def _install(cli: CLI, root: Path, s: Served, *extra: str) -> Run:
    run = cli(*install_args(root, s, *extra))
    assert run.code == 0, run.out + run.err
    return run


def test_upgrade_converges_and_rollback_brings_back_what_10x_ran_with(
    cli: CLI, port_root: Path, served: Callable[..., Served]
) -> None:
    root = port_root
    old, new = served("10.6.0"), served("11.7.0")
    _install(cli, root, old)
    v1 = (root / CONFIG).read_bytes()
    assert _config(root)["no_broadcast"] is True and _config(root)["config_version"] == 1
    assert _run_daemon(root) == []  # 10.x on its own file: no broadcast socket

    upgrade = _install(cli, root, new)
    assert upgrade.json["changed"] is True
    config = _config(root)
    assert (config["config_version"], config["broadcast"]) == (2, False)
    assert "no_broadcast" not in config and config["ctx_size"] == 4096
    assert config["host"] == "127.0.0.1" and config["llamacpp"]["args"].startswith("--parallel 1")
    kept_old = root / RELEASES / f"{(root / RELEASES / 'previous').readlink().name}.config.json"
    assert kept_old.read_bytes() == v1  # what 10.6.0 ran with, kept beside it

    v2 = (root / CONFIG).read_bytes()
    assert _run_daemon(root) == []  # 11.x: nothing to migrate, no broadcast
    assert (root / CONFIG).read_bytes() == v2  # 11.x left the file alone
    for _ in range(2):  # converged: re-runs change nothing
        again = _install(cli, root, new)
        assert again.json["changed"] is False, again.json
    assert cli("status", "--root", root).code == 0

    back = cli("rollback", "--root", root, "--json")
    assert back.code == 0, back.out
    assert (root / CONFIG).read_bytes() == v1  # exactly what 10.6.0 ran with
    assert _run_daemon(root) == []  # no broadcast after the rollback
    assert _install(cli, root, old).json["changed"] is False  # 10.6.0 finds it as it left it
    assert cli("status", "--root", root).code == 0

    forward = _install(cli, root, new)
    assert forward.json["changed"] is True  # the release switch itself
    assert json.loads((root / CONFIG).read_text()) == json.loads(v2)  # what 11.x ran with
    assert _install(cli, root, new).json["changed"] is False


def test_a_file_lemond_migrated_is_never_rewritten_down(
    cli: CLI, port_root: Path, served: Callable[..., Served]
) -> None:
    """10.x over a version-2 file with nothing kept: its own schema from its defaults up,
    and the migrated file kept as the backup; status flagged the mismatch before."""
    root = port_root
    old = served("10.6.0")
    _install(cli, root, old)
    migrated = _config(root)
    migrated.pop("no_broadcast")
    migrated.update(config_version=2, broadcast=False, ctx_size=-1, telemetry={"enabled": False})
    (root / CONFIG).write_text(json.dumps(migrated))
    status = cli("status", "--root", root, "--json")
    config_check = next(c for c in status.json["checks"] if c["name"] == "config")
    assert "version-2 schema, the live release reads version 1" in config_check["detail"]

    run = _install(cli, root, old)
    assert "version-2 schema; this release reads version 1" in run.err  # said, not silent
    config = _config(root)
    assert (config["config_version"], config["no_broadcast"]) == (1, True)
    assert "broadcast" not in config and "telemetry" not in config
    backup = json.loads((root / f"{CONFIG}.bak").read_text())
    assert backup["config_version"] == 2 and backup["telemetry"] == {"enabled": False}
    assert cli("status", "--root", root).code == 0


def test_dry_run_of_an_upgrade_shows_the_new_schema(
    cli: CLI, port_root: Path, served: Callable[..., Served]
) -> None:
    root = port_root
    _install(cli, root, served("10.6.0"))
    s = served("11.7.0")
    args = [a for a in install_args(root, s) if a != "--json"]
    run = cli(*args, "--dry-run")
    assert run.code == 0, run.err
    assert '-  "config_version": 1,' in run.out and '+  "config_version": 2,' in run.out
    assert '-  "no_broadcast": true,' in run.out and '+  "broadcast": false\n' in run.out
    assert "config.json moved to lemond's version-2 schema" in run.out


# --- preflight: a release that would not run here is not promoted --------------------------


def _rebuilt(
    tmp: Path, version: str, replace: dict[str, bytes | str], *, mode: int = 0o644
) -> tuple[Path, str]:
    """A release archive of ``version`` with some members' content replaced."""
    top = top_dir_name(version)
    members: list[Member] = []
    for original in release_members(version):
        rel = original.name.removeprefix(f"{top}/")
        if rel in replace:
            members.append(file(original.name, replace[rel], 0o755 if rel == "lemond" else mode))
        else:
            members.append(original)
    path = write_tar_gz(tmp / archive_name(version), members)
    return path, sha256_of(path)


def _defaults_without(key: str) -> str:
    doc = json.loads(
        next(m for m in release_members("10.6.1") if m.name.endswith("defaults.json")).data or b""
    )
    doc.pop(key)
    return json.dumps(doc)


@pytest.fixture
def missing_library_lemond(tmp_path: Path) -> Iterator[bytes]:
    """A real ELF that links a library this host lacks (built here: gcc, then the library
    removed), for the loader check; skipped, saying so, where no C compiler exists."""
    if shutil.which("gcc") is None:
        pytest.skip("gcc is not installed: cannot build an ELF that links a missing library")
    work = tmp_path / "elf"
    work.mkdir()
    (work / "lib.c").write_text("int hal0_missing(void) { return 0; }\n")
    (work / "main.c").write_text(
        "int hal0_missing(void);\nint main(void) { return hal0_missing(); }\n"
    )
    subprocess.run(["gcc", "-shared", "-fPIC", "-o", work / "libhal0missing.so", work / "lib.c"],
                   check=True)  # fmt: skip
    subprocess.run(["gcc", "-o", work / "lemond", work / "main.c", f"-L{work}", "-lhal0missing"],
                   check=True)  # fmt: skip
    yield (work / "lemond").read_bytes()


@pytest.mark.parametrize(
    "case",
    ["no no_broadcast key", "unknown schema", "wrong version", "missing library"],
)
def test_preflight_refuses_a_release_that_would_not_run_here(
    cli: CLI,
    installed: tuple[Path, Served],
    tmp_path: Path,
    request: pytest.FixtureRequest,
    case: str,
) -> None:
    root, _ = installed
    if case == "no no_broadcast key":
        replace: dict[str, bytes | str] = {
            "resources/defaults.json": _defaults_without("no_broadcast")
        }
        expected = "has no no_broadcast: hal0 could not lock them"
    elif case == "unknown schema":
        defaults = json.loads(_defaults_without("port"))
        replace = {"resources/defaults.json": json.dumps({**defaults, "config_version": 3})}
        expected = "declares config_version 3"
    elif case == "wrong version":
        replace = {"lemond": "#!/bin/sh\necho 'lemond version 9.9.9'\n"}
        expected = "does not run as Lemonade 10.6.1 here: 'lemond version 9.9.9'"
    else:
        replace = {"lemond": request.getfixturevalue("missing_library_lemond")}
        expected = "lemond 10.6.1 needs libhal0missing.so, which this host lacks"
    path, digest = _rebuilt(tmp_path, "10.6.1", replace)
    before = snapshot(root, dir_mtimes=False)
    run = cli(
        "install", "--root", root, "--version", "10.6.1", "--artifact", path,
        "--sha256", digest, "--json",
    )  # fmt: skip
    assert run.code == 1, run.out
    assert run.json["error"].startswith("[Lemonade release] ")
    assert expected in run.json["error"], run.json["error"]
    after = snapshot(root, dir_mtimes=False)
    changed = {k for k in before.keys() | after.keys() if before.get(k) != after.get(k)}
    assert changed == set(), sorted(changed)  # nothing promoted, nothing left behind
