"""`hal0-lemonade doctor` against sandbox roots: digests, GPU access as hal0, the port.

There is no GPU on the test machine: every /dev/kfd and /dev/dri/renderD* below is a
stand-in, a real character device node made with os.mknod that carries /dev/null's
major/minor.  Opening it exercises exactly what the GPU self-test checks (the kernel's
permission decision for the service user's uid, gid and groups), not the driver behind it.
"""

from __future__ import annotations

import os
import shutil
import socket
import stat
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from hal0_lemonade import health
from tests.integration.conftest import CLI, Run, Served, install_args

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mknod and setpriv need root")

RENDER_GID = 4242
CHECKS = [
    "release", "files", "marker", "version", "operator", "state", "config", "unit",
    "account", "gpu", "enabled", "active", "healthy", "port",
]  # fmt: skip


@pytest.fixture
def open_root() -> Iterator[Path]:
    """A sandbox root hal0 can traverse (pytest's own tmp dirs are mode 0700 root)."""
    base = Path(tempfile.mkdtemp(prefix="hal0-doctor-", dir="/tmp"))
    base.chmod(0o755)
    root = base / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc/group").write_text(f"render:x:{RENDER_GID}:\n")
    root.chmod(0o755)
    yield root
    shutil.rmtree(base)


def _install(cli: CLI, root: Path, served: Callable[..., Served]) -> Served:
    s = served()
    run = cli(*install_args(root, s))
    assert run.code == 0, run.out + run.err
    return s


def _checks(run: Run) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in run.json["checks"]}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def _stand_in_node(path: Path, mode: int, gid: int = 0) -> None:
    """A char device with /dev/null's numbers: a stand-in for a GPU node (no GPU here)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    os.mknod(path, stat.S_IFCHR | mode, Path("/dev/null").stat().st_rdev)
    os.chown(path, 0, gid)
    path.chmod(mode)  # mknod applies the umask


def test_a_fresh_sandbox_install_passes(
    cli: CLI, open_root: Path, served: Callable[..., Served]
) -> None:
    _install(cli, open_root, served)
    run = cli("doctor", "--root", open_root, "--json")
    assert run.code == 0, run.out
    checks = _checks(run)
    assert list(checks) == CHECKS
    assert (
        checks["files"]["ok"] is True and "match the install manifest" in checks["files"]["detail"]
    )
    assert checks["account"]["detail"] == "hal0 (uid {}) in render".format(
        (open_root / "etc/passwd").read_text().split("hal0:x:")[1].split(":")[0]
    )
    for name in ("version", "active", "healthy"):
        assert (
            checks[name]["ok"] is None and "no systemd runs under --root" in checks[name]["detail"]
        )
    assert checks["gpu"]["ok"] is None and "no GPU exposed" in checks["gpu"]["detail"]

    human = cli("doctor", "--root", open_root)
    assert human.code == 0
    assert human.out.splitlines()[-1] == "all 10 applicable checks pass (4 n/a)"


def test_nothing_installed_fails_with_hints(cli: CLI, open_root: Path) -> None:
    run = cli("doctor", "--root", open_root)
    assert run.code == 1
    assert "FAIL release" in run.out and "FAIL files" in run.out
    assert "hint: re-run `hal0-lemonade install`" in run.out


def test_same_size_tampering_is_found_by_name_and_the_hint_repairs_it(
    cli: CLI, open_root: Path, served: Callable[..., Served]
) -> None:
    s = _install(cli, open_root, served)
    lemond = open_root / "opt/lemonade/lemond"
    data = bytearray(lemond.read_bytes())
    data[-2] ^= 0x01  # one bit, same size: only the digest can tell
    lemond.write_bytes(bytes(data))

    run = cli("doctor", "--root", open_root, "--json")
    assert run.code == 1
    files = _checks(run)["files"]
    assert files["ok"] is False
    assert files["problems"] == ["lemond: content changed (sha256 differs from the manifest)"]
    assert "install checks sizes only" in files["hint"]
    human = cli("doctor", "--root", open_root)
    assert "FAIL files" in human.out and "lemond: content changed" in human.out

    # The hint is true: install alone does not notice, install --reinstall repairs, and the
    # damaged copy does not become the release to roll back to.
    assert cli(*install_args(open_root, s)).step("Lemonade release")["status"] == "ok"
    assert cli("doctor", "--root", open_root).code == 1
    previous = open_root / "opt/lemonade.releases/previous"
    assert not previous.exists()
    repaired = cli(*install_args(open_root, s, "--reinstall"))
    assert repaired.code == 0, repaired.err
    assert repaired.step("Lemonade release")["status"] == "changed"
    assert not previous.exists()
    assert cli("doctor", "--root", open_root).code == 0
    assert len(list((open_root / "opt/lemonade.releases").iterdir())) == 1


def test_corruption_added_files_and_loosened_modes_are_named(
    cli: CLI, open_root: Path, served: Callable[..., Served]
) -> None:
    s = _install(cli, open_root, served)
    live = open_root / "opt/lemonade"
    defaults = live / "resources/defaults.json"
    defaults.write_bytes(defaults.read_bytes()[:10])
    (live / "resources/libevil.so").write_bytes(b"\x7fELF")
    (live / "lemonade").chmod(0o777)

    run = cli("doctor", "--root", open_root, "--json")
    problems = _checks(run)["files"]["problems"]
    assert any(p.startswith("resources/defaults.json: size 10, recorded") for p in problems)
    assert "resources/libevil.so: not part of the release (added after install)" in problems
    assert "lemonade: mode 777, recorded 755" in problems
    assert "lemonade: writable by others than root (owner uid 0)" in problems
    assert _checks(run)["release"]["ok"] is False  # the size change is visible to status too

    # A size change is something install repairs by itself, as the hint says.
    assert "re-run `hal0-lemonade install`" in _checks(run)["files"]["hint"]
    assert cli(*install_args(open_root, s)).step("Lemonade release")["status"] == "changed"
    assert _checks(cli("doctor", "--root", open_root, "--json"))["files"]["ok"] is True


def test_gpu_self_test_runs_as_hal0_and_finds_a_node_it_cannot_open(
    cli: CLI, open_root: Path, served: Callable[..., Served]
) -> None:
    _install(cli, open_root, served)
    dev = open_root / "dev"
    kfd, render = dev / "kfd", dev / "dri/renderD128"
    _stand_in_node(kfd, 0o600)  # root:root 0600, as LXC leaves /dev/kfd after a boot
    _stand_in_node(render, 0o660, RENDER_GID)  # root:render 0660: hal0 gets in by its group

    run = cli("doctor", "--root", open_root, "--json")
    assert run.code == 1
    gpu = _checks(run)["gpu"]
    assert gpu["ok"] is False
    assert gpu["detail"] == (
        f"hal0 cannot open {kfd} (EACCES: Permission denied); can open {render}"
    )
    assert f"chgrp render {kfd} && chmod 0660 {kfd}" in gpu["hint"]
    assert "group membership is not enough" in gpu["hint"]

    # Following the hint fixes it: the same test as hal0 now opens both.
    os.chown(kfd, 0, RENDER_GID)
    kfd.chmod(0o660)
    gpu = _checks(cli("doctor", "--root", open_root, "--json"))["gpu"]
    assert gpu == {
        "name": "gpu",
        "ok": True,
        "detail": f"hal0 can open {kfd}, {render}",
        "hint": "",
    }


def test_gpu_self_test_uses_the_accounts_groups_not_roots(
    cli: CLI, open_root: Path, served: Callable[..., Served]
) -> None:
    """Without render membership hal0 cannot open a root:render 0660 node (root could)."""
    _install(cli, open_root, served)
    group = open_root / "etc/group"
    group.write_text(group.read_text().replace(f"render:x:{RENDER_GID}:hal0", "render:x:4242:"))
    _stand_in_node(open_root / "dev/dri/renderD128", 0o660, RENDER_GID)
    run = cli("doctor", "--root", open_root, "--json")
    checks = _checks(run)
    assert checks["account"]["ok"] is False and "not in render" in checks["account"]["detail"]
    assert checks["gpu"]["ok"] is False and "EACCES" in checks["gpu"]["detail"]


def test_the_device_directory_is_injectable(
    cli: CLI, open_root: Path, served: Callable[..., Served]
) -> None:
    _install(cli, open_root, served)
    elsewhere = open_root.parent / "devices"
    _stand_in_node(elsewhere / "kfd", 0o666)
    (elsewhere / "dri").mkdir()
    (elsewhere / "dri/renderD128").write_text("a regular file is not a device node")
    run = cli("doctor", "--root", open_root, "--dev-dir", elsewhere, "--json")
    assert run.code == 0, run.out
    assert _checks(run)["gpu"]["detail"] == f"hal0 can open {elsewhere / 'kfd'}"


def test_port_held_by_another_process_is_named(
    cli: CLI, open_root: Path, served: Callable[..., Served]
) -> None:
    port = _free_port()
    (open_root / "etc/hal0").mkdir(parents=True)
    (open_root / "etc/hal0/lemonade.toml").write_text(f"port = {port}\n")
    _install(cli, open_root, served)
    with socket.socket() as squatter:
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squatter.bind(("127.0.0.1", port))
        squatter.listen()
        run = cli("doctor", "--root", open_root, "--json")
    assert run.code == 1
    check = _checks(run)["port"]
    assert check["detail"].startswith(f"port {port} is held by pid {os.getpid()} (")
    assert check["detail"].endswith(", not lemond")
    assert "port = N" in check["hint"]
    assert _checks(run)["config"]["ok"] is True  # the operator's port reached config.json


def test_port_held_by_lemond_passes(
    cli: CLI, open_root: Path, served: Callable[..., Served]
) -> None:
    port = _free_port()
    (open_root / "etc/hal0").mkdir(parents=True)
    (open_root / "etc/hal0/lemonade.toml").write_text(f"port = {port}\n")
    _install(cli, open_root, served)
    daemon = subprocess.Popen(  # the stand-in lemond from the installed release
        [open_root / "opt/lemonade/lemond", open_root / "var/lib/hal0/lemonade"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert health.wait_healthy("127.0.0.1", port, timeout=10) is not None
        run = cli("doctor", "--root", open_root, "--json")
    finally:
        daemon.terminate()
        daemon.wait(timeout=10)
    assert _checks(run)["port"] == {
        "name": "port",
        "ok": True,
        "detail": f"port {port} is held by lemond (pid {daemon.pid})",
        "hint": "",
    }


def test_a_broken_operator_file_fails_one_check_and_the_rest_still_run(
    cli: CLI, open_root: Path, served: Callable[..., Served]
) -> None:
    _install(cli, open_root, served)
    (open_root / "etc/hal0").mkdir(parents=True)
    (open_root / "etc/hal0/lemonade.toml").write_text("max_loaded_modles = 2\n")
    run = cli("doctor", "--root", open_root, "--json")
    assert run.code == 1
    checks = _checks(run)
    assert list(checks) == CHECKS
    assert checks["operator"]["ok"] is False
    assert "'max_loaded_modles' is not a known key" in checks["operator"]["detail"]
    assert "did you mean 'max_loaded_models'" in checks["operator"]["hint"]
    assert checks["files"]["ok"] is True
