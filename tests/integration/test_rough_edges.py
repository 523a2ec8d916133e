"""What an operator trying every command hit, each now a test (issue "One pipeline for every
command"): the explanation of a same-version change, hints that fit the failure, a dry run
that refuses what the run would refuse, step numbers that add up, one validation of flags and
the environment for every command, a failed install that leaves nothing, a --reinstall that
keeps the release's own name."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.integration.conftest import CLI, Served, install_args, snapshot


def test_a_plain_install_after_an_artifact_install_says_why_it_downloads(
    cli: CLI, installed: tuple[Path, Served]
) -> None:
    """The installed 10.6.0 came from --artifact/--sha256; the pin names another archive."""
    root, s = installed
    run = cli("install", "--root", root, "--dry-run")
    assert run.code == 0, run.err
    mine, pinned = s.release.sha256[:12], "3b50b5cc5a96"
    assert f"the installed 10.6.0 is archive sha256 {mine}, the pin asks for sha256 {pinned}" in (
        run.out
    )
    assert f"-version 10.6.0 (sha256 {mine})" in run.out
    assert f"+version 10.6.0 (sha256 {pinned})" in run.out


@pytest.mark.parametrize(
    ("kind", "message", "hint"),
    [
        ("missing", "artifact not found", "check the path given to --artifact"),
        ("directory", "artifact is not a file", "names the .tar.gz archive itself"),
    ],
)
@pytest.mark.parametrize("dry_run", [[], ["--dry-run"]], ids=["run", "dry-run"])
def test_a_bad_local_artifact_gets_a_hint_about_the_path_even_in_a_dry_run(  # noqa: PLR0917
    cli: CLI, root: Path, kind: str, message: str, hint: str, dry_run: list[str]
) -> None:
    artifact = root.parent / "nothing-here.tar.gz"
    if kind == "directory":
        artifact.mkdir()
    args = ["install", "--root", root, "--artifact", artifact, "--sha256", "a" * 64, "--json"]
    run = cli(*args, *dry_run)
    assert run.code == 1, run.out
    assert message in run.json["error"] and hint in run.json["error"], run.json["error"]
    assert "re-run" not in run.json["error"]
    assert not any(root.iterdir()), "a refused install leaves an empty root empty"


@pytest.mark.parametrize("command", [["install"], ["rollback"], ["uninstall"]])
def test_step_numbers_must_add_up(
    cli: CLI, installed: tuple[Path, Served], served: Callable[..., Served], command: list[str]
) -> None:
    root, s = installed
    assert cli(*install_args(root, served("10.6.1"))).code == 0  # a release to roll back to
    extra = [a for a in install_args(root, s) if a not in ("install", "--root", root)]
    args = [*command, "--root", root, *(extra if command == ["install"] else ["--json"])]
    run = cli(*args, "--dry-run", "--step-offset", "4", "--step-total", "3")
    assert run.code == 2, run.out + run.err
    assert "--step-total 3 is less than --step-offset 4 plus this" in run.out + run.err


@pytest.mark.parametrize(
    "command",
    [["install", "--dry-run"], ["status"], ["doctor"], ["rollback", "--dry-run"],
     ["uninstall", "--dry-run"], ["config", "show"]],
)  # fmt: skip
def test_every_command_refuses_a_malformed_environment_the_same_way(
    cli: CLI, root: Path, command: list[str]
) -> None:
    run = cli(*command, "--root", root, env={"HAL0_LEMONADE_HTTP_TIMEOUT": "soon"})
    assert run.code == 2, run.out
    assert "error: HAL0_LEMONADE_HTTP_TIMEOUT='soon' is not a number of seconds" in run.err
    assert "hint: HAL0_LEMONADE_HTTP_TIMEOUT sets the connect and read timeout" in run.err


def test_after_uninstall_status_says_not_installed(
    cli: CLI, installed: tuple[Path, Served]
) -> None:
    root, _ = installed
    assert cli("uninstall", "--root", root).code == 0
    for command in ("status", "doctor"):
        run = cli(command, "--root", root, "--json")
        marker = next(c for c in run.json["checks"] if c["name"] == "marker")
        assert marker["detail"] == "no /opt/lemonade/.installed-version: not installed"
        assert "None" not in json.dumps(run.json["checks"])


def test_a_failed_install_on_an_empty_root_leaves_only_its_lock(
    cli: CLI, root: Path, served: Callable[..., Served], http_server: object
) -> None:
    s = served()
    args = [a if a != s.url else s.url.replace(".tar.gz", "-missing.tar.gz") for a in
            install_args(root, s)]  # fmt: skip
    run = cli(*args)
    assert run.code == 1, run.out
    left = sorted(str(p.relative_to(root)) for p in root.rglob("*"))
    assert left == ["run", "run/hal0-lemonade.lock"], left


def test_a_reinstall_repairs_in_place_under_the_releases_own_name(
    cli: CLI, installed: tuple[Path, Served], served: Callable[..., Served]
) -> None:
    root, _ = installed
    newer = served("10.6.1")
    assert cli(*install_args(root, newer)).code == 0
    live = root / "opt/lemonade"
    name = live.readlink().name
    previous = (root / "opt/lemonade.releases/previous").readlink().name
    lemond = live / "lemond"
    data = bytearray(lemond.read_bytes())
    data[-2] ^= 1  # same size: only doctor's digests notice
    lemond.write_bytes(bytes(data))
    before = snapshot(root / "opt/lemonade.releases" / previous)

    run = cli(*install_args(root, newer, "--reinstall"))
    assert run.code == 0, run.out
    assert live.readlink().name == name  # the live link never moved, the name is kept
    assert (root / "opt/lemonade.releases/previous").readlink().name == previous
    assert snapshot(root / "opt/lemonade.releases" / previous) == before
    kept = sorted(p.name for p in (root / "opt/lemonade.releases").iterdir())
    assert kept == sorted([name, previous, f"{previous}.config.json", "previous"]), kept
    assert cli("doctor", "--root", root, "--json").json["checks"][1]["ok"] is True


def test_a_deliberate_no_start_is_not_a_failure_in_status(
    cli: CLI, root: Path, served: Callable[..., Served]
) -> None:
    """``--no-start`` leaves the unit disabled on purpose: status says so (n/a) and passes;
    a later install without it enables the service and drops the record."""
    s = served()
    assert cli(*install_args(root, s, "--no-start")).code == 0
    record = root / "opt/lemonade.releases/no-start"
    assert record.is_file() and record.stat().st_uid == 0
    again = cli(*install_args(root, s, "--no-start"))
    assert again.json["changed"] is False, again.out  # the record is not rewritten
    for command in ("status", "doctor"):
        run = cli(command, "--root", root, "--json")
        assert run.code == 0, run.out
        enabled = next(c for c in run.json["checks"] if c["name"] == "enabled")
        assert enabled["ok"] is None
        assert enabled["detail"] == (
            "not enabled: installed with --no-start (/opt/lemonade.releases/no-start)"
        )

    dry = cli(*install_args(root, s, "--dry-run"))
    assert "remove the --no-start record /opt/lemonade.releases/no-start" in json.dumps(dry.json)
    assert record.is_file()
    assert cli(*install_args(root, s)).code == 0
    assert not record.exists()
    run = cli("status", "--root", root, "--json")
    enabled = next(c for c in run.json["checks"] if c["name"] == "enabled")
    assert (enabled["ok"], enabled["detail"]) == (True, "enabled")
