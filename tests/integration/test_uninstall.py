"""`hal0-lemonade uninstall` against sandbox roots: what goes, what stays, twice."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tests.integration.conftest import CLI, Served, install_args, snapshot

STEPS = [
    "Service stop",
    "Service disable",
    "systemd unit",
    "Lemonade release",
    "Daemon state",
    "Service account",
]
UNIT = "etc/systemd/system/hal0-lemonade.service"
WANTS = "etc/systemd/system/multi-user.target.wants/hal0-lemonade.service"
GONE = [
    UNIT,
    UNIT + ".d",
    WANTS,
    "opt/lemonade",
    "opt/lemonade.releases",
    "var/cache/hal0-lemonade",
]


def _names(path: Path) -> set[str]:
    return {line.split(":")[0] for line in path.read_text().splitlines()}


def _prepare(root: Path) -> None:
    """A drop-in (removed with the unit) and an operator file (always kept)."""
    (root / f"{UNIT}.d").mkdir()
    (root / f"{UNIT}.d/local.conf").write_text("[Service]\nEnvironment=X=1\n")
    (root / "etc/hal0").mkdir(parents=True)
    (root / "etc/hal0/lemonade.toml").write_text("max_loaded_models = 4\n")


def test_dry_run_lists_the_removals_and_changes_nothing(
    cli: CLI, installed: tuple[Path, Served]
) -> None:
    root, _ = installed
    _prepare(root)
    before = snapshot(root)
    run = cli("uninstall", "--root", root, "--dry-run")
    assert run.code == 0, run.err
    assert "Dry run: nothing is changed. The uninstall would do this:" in run.out
    assert f"$ systemctl --root={root} disable hal0-lemonade.service" in run.out
    assert "remove /etc/systemd/system/hal0-lemonade.service.d (drop-ins)" in run.out
    assert "remove /var/cache/hal0-lemonade (the download cache)" in run.out
    doc = cli("uninstall", "--root", root, "--dry-run", "--json").json
    assert doc["dry_run"] is True and doc["changed"] is True and doc["version"] == "10.6.0"
    assert [s["name"] for s in doc["steps"]] == STEPS
    assert snapshot(root) == before


def test_uninstall_keeps_state_and_account_and_a_second_run_changes_nothing(
    cli: CLI, installed: tuple[Path, Served]
) -> None:
    root, _ = installed
    _prepare(root)
    assert (root / "var/cache/hal0-lemonade").is_dir()
    config = (root / "var/lib/hal0/lemonade/config.json").read_bytes()

    run = cli("uninstall", "--root", root, "--json")
    assert run.code == 0, run.err
    doc = run.json
    assert doc["ok"] and doc["changed"] and doc["version"] == "10.6.0"
    assert [s["status"] for s in doc["steps"]] == ["skipped"] + ["changed"] * 3 + ["skipped"] * 2
    for rel in GONE:
        assert not (root / rel).exists() and not (root / rel).is_symlink(), rel
    assert (root / "var/lib/hal0/lemonade/config.json").read_bytes() == config
    assert "hal0" in _names(root / "etc/passwd")
    assert (root / "etc/hal0/lemonade.toml").is_file()
    assert doc["kept"] == [
        "/var/lib/hal0 (config, models, caches)",
        "user hal0",
        "/etc/hal0/lemonade.toml (the operator's file)",
    ]

    before = snapshot(root)
    again = cli("uninstall", "--root", root, "--json")
    assert again.code == 0
    assert again.json["changed"] is False
    assert {s["status"] for s in again.json["steps"]} == {"ok", "skipped"}
    assert snapshot(root) == before

    human = cli("uninstall", "--root", root)
    assert "hal0-lemonade: nothing to remove (0 step(s) changed)" in human.out


def test_purge_removes_state_and_account_too(cli: CLI, installed: tuple[Path, Served]) -> None:
    root, _ = installed
    _prepare(root)
    run = cli("uninstall", "--root", root, "--purge")
    assert run.code == 0, run.err
    assert "[5/6] Daemon state           changed  removed /var/lib/hal0" in run.out
    assert not (root / "var/lib/hal0").exists()
    for db in ("passwd", "group", "shadow", "gshadow"):
        assert "hal0" not in _names(root / "etc" / db), db
    assert (root / "etc/hal0/lemonade.toml").is_file(), "the operator's file is theirs"

    before = snapshot(root)
    again = cli("uninstall", "--root", root, "--purge", "--json")
    assert again.json["changed"] is False
    assert snapshot(root) == before


def test_reinstall_after_uninstall_reuses_the_kept_state(
    cli: CLI, installed: tuple[Path, Served]
) -> None:
    root, s = installed
    assert cli("uninstall", "--root", root).code == 0
    run = cli(*install_args(root, s))
    assert run.code == 0, run.err
    assert run.step("Daemon config")["status"] == "ok"
    assert run.step("Service account")["status"] == "ok"
    assert run.step("Lemonade release")["status"] == "changed"


def test_a_dangling_wants_link_is_removed_without_systemctl(
    cli: CLI, installed: tuple[Path, Served]
) -> None:
    root, _ = installed
    (root / UNIT).unlink()
    run = cli("uninstall", "--root", root, "--json")
    assert run.code == 0, run.err
    assert run.step("Service disable")["detail"] == f"removed /{WANTS}"
    assert not (root / WANTS).is_symlink()


def test_step_numbering_can_be_embedded(cli: CLI, installed: tuple[Path, Served]) -> None:
    root, _ = installed
    run = cli("uninstall", "--root", root, "--step-offset", "4", "--step-total", "10")
    assert run.code == 0
    labels = [line.split("]")[0] + "]" for line in run.out.splitlines() if line.startswith("[")]
    assert labels == [f"[{n}/10]" for n in range(5, 11)]


def test_an_empty_root_has_nothing_to_remove(
    cli: CLI, root: Path, served: Callable[..., Served]
) -> None:
    del served
    run = cli("uninstall", "--root", root, "--purge", "--json")
    assert run.code == 0, run.err
    assert run.json["changed"] is False and run.json["version"] == ""
