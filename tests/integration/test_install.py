"""`hal0-lemonade install` against temp roots, with archives served over loopback HTTP."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.integration.conftest import CLI, Served, install_args, snapshot
from tests.support.httpserver import HTTPTestServer

STEPS = [
    "Release pin",
    "Lemonade release",
    "Service account",
    "Daemon config",
    "systemd unit",
    "Service start",
]


def _passwd(root: Path) -> dict[str, list[str]]:
    lines = (root / "etc/passwd").read_text().splitlines()
    return {line.split(":")[0]: line.split(":") for line in lines}


def test_fresh_install_lays_down_everything(
    cli: CLI, root: Path, served: Callable[..., Served]
) -> None:
    s = served()
    run = cli(*install_args(root, s))

    assert run.code == 0, run.err
    doc = run.json
    assert set(doc) >= {"ok", "changed", "version", "steps", "error"}
    assert doc["ok"] is True and doc["changed"] is True and doc["error"] is None
    assert doc["version"] == "10.6.0"
    assert [st["name"] for st in doc["steps"]] == STEPS
    assert [st["status"] for st in doc["steps"]] == ["ok"] + ["changed"] * 5
    assert "not started: no systemd runs under --root" in run.step("Service start")["detail"]

    live = root / "opt/lemonade"
    assert live.is_symlink()
    for rel in ("lemond", "lemonade", "LICENSE", "resources/defaults.json"):
        assert (live / rel).is_file()
    assert os.access(live / "lemond", os.X_OK)
    marker = (live / ".installed-version").read_text().splitlines()
    assert marker[0] == "10.6.0"
    assert f"sha256={s.release.sha256}" in marker
    assert "verified=yes" in marker

    hal0 = _passwd(root)["hal0"]
    assert hal0[5] == "/var/lib/hal0" and hal0[6] == "/usr/sbin/nologin"
    uid, gid = int(hal0[2]), int(hal0[3])
    assert uid < 1000, "a system account"
    assert "hal0" in {line.split(":")[0] for line in (root / "etc/group").read_text().splitlines()}

    config_path = root / "var/lib/hal0/lemonade/config.json"
    config = json.loads(config_path.read_text())
    assert config["llamacpp"]["args"].startswith("--parallel 1 --threads ")
    assert config["host"] == "127.0.0.1" and config["port"] == 13305
    st = config_path.stat()
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (uid, gid, 0o644)
    for state_dir in ("var/lib/hal0", "var/lib/hal0/lemonade", "var/lib/hal0/huggingface"):
        assert (root / state_dir).stat().st_uid == uid

    # The release tree is root's: hal0 must not be able to rewrite its own binary.
    for path in [live.resolve(), *live.resolve().rglob("*")]:
        pst = path.lstat()
        assert pst.st_uid == 0
        assert not stat.S_IMODE(pst.st_mode) & 0o022, path

    unit = (root / "etc/systemd/system/hal0-lemonade.service").read_text()
    assert "ExecStart=/opt/lemonade/lemond /var/lib/hal0/lemonade" in unit
    assert (root / "etc/systemd/system/multi-user.target.wants/hal0-lemonade.service").is_symlink()


def test_rerun_changes_nothing_and_downloads_nothing(
    cli: CLI, installed: tuple[Path, Served], http_server: HTTPTestServer
) -> None:
    root, s = installed
    before = snapshot(root)
    http_server.clear_requests()

    run = cli(*install_args(root, s))

    assert run.code == 0, run.err
    assert run.json["changed"] is False
    assert {st["status"] for st in run.json["steps"]} == {"ok"}
    assert http_server.requests == []
    after = snapshot(root)
    after.pop("run/lock/hal0-lemonade.lock", None)
    before.pop("run/lock/hal0-lemonade.lock", None)
    assert after == before


def test_human_output_numbers_every_step(
    cli: CLI, root: Path, served: Callable[..., Served]
) -> None:
    s = served()
    args = [a for a in install_args(root, s) if a != "--json"]
    run = cli(*args)
    assert run.code == 0, run.err
    lines = [line for line in run.out.splitlines() if line.startswith("[")]
    assert [line.split("]")[0] + "]" for line in lines] == [f"[{i}/6]" for i in range(1, 7)]


def test_step_numbering_can_be_embedded(
    cli: CLI, root: Path, served: Callable[..., Served]
) -> None:
    s = served()
    args = [a for a in install_args(root, s) if a != "--json"]
    run = cli(*args, "--step-offset", "4", "--step-total", "10")
    assert run.code == 0, run.err
    assert run.out.splitlines()[0].startswith("[5/10] Release pin")


@pytest.mark.parametrize("flag", ["--dry-run", "--dev"])
def test_dry_run_on_an_empty_root_changes_nothing(
    cli: CLI, root: Path, served: Callable[..., Served], http_server: HTTPTestServer, flag: str
) -> None:
    s = served()
    args = [a for a in install_args(root, s) if a != "--json"]
    run = cli(*args, flag)

    assert run.code == 0, run.err
    assert list(root.iterdir()) == []
    assert http_server.requests == []
    assert "Dry run: nothing is changed" in run.out
    assert '+    "args": "--parallel 1 --threads' in run.out  # the config diff
    assert "$ useradd" in run.out


def test_dry_run_json_says_what_would_change(cli: CLI, installed: tuple[Path, Served]) -> None:
    root, s = installed
    before = snapshot(root)
    run = cli(*install_args(root, s, "--threads", "5", "--dry-run"))
    assert run.code == 0
    doc = run.json
    assert doc["dry_run"] is True and doc["changed"] is True
    assert run.step("Daemon config")["status"] == "changed"
    assert run.step("Lemonade release")["status"] == "ok"
    assert snapshot(root) == before


def test_threads_flag_updates_only_the_config(cli: CLI, installed: tuple[Path, Served]) -> None:
    root, s = installed
    run = cli(*install_args(root, s, "--threads", "3"))
    assert run.code == 0, run.err
    changed = {st["name"] for st in run.json["steps"] if st["status"] == "changed"}
    assert changed == {"Daemon config"}
    config = json.loads((root / "var/lib/hal0/lemonade/config.json").read_text())
    assert config["llamacpp"]["args"] == "--parallel 1 --threads 3"
    backup = json.loads((root / "var/lib/hal0/lemonade/config.json.bak").read_text())
    assert backup["llamacpp"]["args"] != "--parallel 1 --threads 3"


def test_config_keeps_daemon_keys_and_enforces_locked_ones(
    cli: CLI, installed: tuple[Path, Served]
) -> None:
    root, s = installed
    path = root / "var/lib/hal0/lemonade/config.json"
    config = json.loads(path.read_text())
    # What lemond itself might have written at run time (POST /internal/set) ...
    config["models_dir"] = "/srv/models"
    config["llamacpp"]["vulkan_args"] = "--no-mmap"
    # ... and a drifted locked key.
    config["host"] = "192.0.2.1"
    config["llamacpp"]["args"] = "--parallel 4"
    path.write_text(json.dumps(config, indent=4))

    run = cli(*install_args(root, s))
    assert run.code == 0, run.err
    merged = json.loads(path.read_text())
    assert merged["models_dir"] == "/srv/models"
    assert merged["llamacpp"]["vulkan_args"] == "--no-mmap"
    assert merged["host"] == "127.0.0.1"
    assert merged["llamacpp"]["args"].startswith("--parallel 1 --threads ")


def test_equivalent_config_in_another_format_is_not_rewritten(
    cli: CLI, installed: tuple[Path, Served]
) -> None:
    root, s = installed
    path = root / "var/lib/hal0/lemonade/config.json"
    path.write_text(json.dumps(json.loads(path.read_text()), indent=8, sort_keys=True))
    before = path.stat()
    run = cli(*install_args(root, s))
    assert run.code == 0
    assert run.step("Daemon config")["status"] == "ok"
    assert path.stat().st_ino == before.st_ino


def test_corrupt_config_is_backed_up_and_replaced(cli: CLI, installed: tuple[Path, Served]) -> None:
    root, s = installed
    path = root / "var/lib/hal0/lemonade/config.json"
    path.write_text("{ not json")
    run = cli(*install_args(root, s))
    assert run.code == 0, run.err
    assert json.loads(path.read_text())["port"] == 13305
    assert (root / "var/lib/hal0/lemonade/config.json.bak").read_text() == "{ not json"


def test_upgrade_keeps_the_previous_release(
    cli: CLI, installed: tuple[Path, Served], served: Callable[..., Served]
) -> None:
    root, _ = installed
    first_target = (root / "opt/lemonade").readlink()
    newer = served("10.6.1")
    run = cli(*install_args(root, newer))
    assert run.code == 0, run.err
    assert run.step("Lemonade release")["status"] == "changed"
    assert (root / "opt/lemonade/.installed-version").read_text().startswith("10.6.1\n")
    previous = root / "opt/lemonade.releases/previous"
    assert previous.readlink().name == first_target.name
    assert (previous / "lemond").is_file()

    third = served("10.6.2")
    assert cli(*install_args(root, third)).code == 0
    kept = sorted(p.name for p in (root / "opt/lemonade.releases").iterdir())
    # live, previous with the config it ran with, and the "previous" link itself
    assert len(kept) == 4, kept
    assert f"{previous.readlink().name}.config.json" in kept
    assert not any(name.startswith("10.6.0") for name in kept)


def test_seed_era_directory_becomes_the_previous_release(
    cli: CLI, root: Path, served: Callable[..., Served]
) -> None:
    legacy = root / "opt/lemonade"
    legacy.mkdir(parents=True)
    (legacy / "lemond").write_text("old")
    (legacy / ".installed-version").write_text("10.5.0\n")
    run = cli(*install_args(root, served()))
    assert run.code == 0, run.err
    assert (root / "opt/lemonade").is_symlink()
    previous = root / "opt/lemonade.releases/previous"
    assert (previous / "lemond").read_text() == "old"


def test_broken_live_tree_is_repaired(cli: CLI, installed: tuple[Path, Served]) -> None:
    root, s = installed
    (root / "opt/lemonade/resources/defaults.json").unlink()
    run = cli(*install_args(root, s))
    assert run.code == 0, run.err
    assert run.step("Lemonade release")["status"] == "changed"
    assert (root / "opt/lemonade/resources/defaults.json").is_file()


def test_install_from_a_local_path_and_a_file_url(
    cli: CLI, root: Path, served: Callable[..., Served], http_server: HTTPTestServer
) -> None:
    s = served()
    base = ["install", "--root", root, "--sha256", s.release.sha256, "--json", "--no-start"]
    run = cli(*base, "--artifact", s.release.path)
    assert run.code == 0, run.err
    # The first --no-start run records it (status reads the record); later ones skip.
    assert run.step("Service start")["status"] == "changed"
    assert run.step("Service start")["detail"].startswith("--no-start: service not enabled")
    (root / "opt/lemonade/resources/defaults.json").unlink()
    run = cli(*base, "--artifact", s.release.path.as_uri())
    assert run.code == 0, run.err
    assert run.step("Service start")["status"] == "skipped"
    assert (root / "opt/lemonade/resources/defaults.json").is_file()
    assert http_server.requests == []


def test_download_cache_serves_a_reinstall_without_network(
    cli: CLI, installed: tuple[Path, Served], http_server: HTTPTestServer
) -> None:
    root, s = installed
    assert (root / f"var/cache/hal0-lemonade/{s.release.sha256}.tar.gz").is_file()
    (root / "opt/lemonade/LICENSE").unlink()
    http_server.remove(f"/dl/{s.release.name}")
    run = cli(*install_args(root, s))
    assert run.code == 0, run.err
    assert "download cache" in run.step("Lemonade release")["detail"]


def test_placeholder_pin_is_refused_unless_waived(
    cli: CLI, root: Path, served: Callable[..., Served]
) -> None:
    s = served()
    args = ["install", "--root", root, "--artifact", s.url, "--sha256", "0" * 64, "--json"]
    refused = cli(*args)
    assert refused.code == 1
    assert "placeholder" in refused.json["error"]
    assert list(root.iterdir()) == []

    waived = cli(*args, env={"HAL0_SKIP_LEMONADE_SHA": "1"})
    assert waived.code == 0, waived.err
    assert "WITHOUT verifying" in waived.err
    assert "verified=no" in (root / "opt/lemonade/.installed-version").read_text()


def test_relative_root_is_resolved(
    cli: CLI, root: Path, served: Callable[..., Served], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(root.parent)
    s = served()
    run = cli(*install_args(Path(root.name), s))
    assert run.code == 0, run.err
    assert "hal0" in _passwd(root)


def test_release_modes_do_not_depend_on_the_operators_umask(
    cli: CLI, root: Path, served: Callable[..., Served]
) -> None:
    """Under `umask 077` (a hardened root shell) the release must still be readable and
    traversable by the hal0 service user: 0755 dirs and programs, 0644 data."""
    old = os.umask(0o077)
    try:
        run = cli(*install_args(root, served(), "--no-start"))
    finally:
        os.umask(old)

    assert run.code == 0, run.err
    tree = (root / "opt/lemonade").resolve()
    modes = {
        p.relative_to(tree).as_posix(): stat.S_IMODE(p.lstat().st_mode)
        for p in [tree, *tree.rglob("*")]
        if not p.is_symlink()
    }
    assert modes["."] == 0o755
    assert modes["resources"] == 0o755
    assert modes["lemond"] == 0o755
    assert modes["resources/defaults.json"] == 0o644
    assert set(modes.values()) <= {0o755, 0o644}, modes
