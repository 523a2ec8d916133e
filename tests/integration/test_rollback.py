"""Rolling back: `hal0-lemonade rollback` on request, and automatically after a bad upgrade."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

import pytest

from hal0_lemonade import install, settings
from hal0_lemonade.environment import Environment
from hal0_lemonade.errors import ServiceError
from hal0_lemonade.hostfacts import Host
from hal0_lemonade.layout import SERVICE_NAME, Layout
from hal0_lemonade.resources import release_links, service
from hal0_lemonade.runner import CommandResult, Identity, SubprocessRunner
from tests.integration.conftest import CLI, Served, install_args, snapshot
from tests.support.httpserver import HTTPTestServer, Status, free_port


def _live_version(root: Path) -> str:
    return (root / "opt/lemonade/.installed-version").read_text().splitlines()[0]


def _previous_target(root: Path) -> str:
    return (root / "opt/lemonade.releases/previous").readlink().name


def _previous_version(root: Path) -> str:
    marker = root / "opt/lemonade.releases/previous/.installed-version"
    return marker.read_text().splitlines()[0]


@pytest.fixture
def upgraded(
    cli: CLI, installed: tuple[Path, Served], served: Callable[..., Served]
) -> tuple[Path, Served, Served]:
    """10.6.0 installed, then 10.6.1 over it (files only)."""
    root, old = installed
    new = served("10.6.1")
    run = cli(*install_args(root, new))
    assert run.code == 0, run.out
    return root, old, new


def test_rollback_swaps_the_previous_release_back_without_the_network(
    cli: CLI, upgraded: tuple[Path, Served, Served], http_server: HTTPTestServer
) -> None:
    root, old, new = upgraded
    for s in (old, new):
        http_server.set_fault(f"/dl/{s.release.name}", Status(404))
    http_server.clear_requests()

    run = cli("rollback", "--root", root, "--json")

    assert run.code == 0, run.out
    assert run.json["ok"] is True and run.json["changed"] is True
    assert run.json["version"] == "10.6.0"
    assert run.step("Release rollback")["detail"] == "rolled back from 10.6.1 to 10.6.0"
    restart = run.step("Service restart")
    assert restart["status"] == "skipped"
    assert "not restarted: no systemd runs under --root" in restart["detail"]
    assert (_live_version(root), _previous_version(root)) == ("10.6.0", "10.6.1")
    assert (root / "opt/lemonade/lemond").read_bytes() == _member(old, "lemond")
    assert http_server.requests == []

    # And forward again: a second rollback swaps back.
    run = cli("rollback", "--root", root, "--json")
    assert run.code == 0
    assert (_live_version(root), _previous_version(root)) == ("10.6.1", "10.6.0")


def _member(s: Served, rel: str) -> bytes:
    for member in s.release.members:
        if member.name == f"{s.release.top_dir}/{rel}":
            return member.data
    raise KeyError(rel)


def test_install_after_a_rollback_goes_live_with_the_kept_release(
    cli: CLI, upgraded: tuple[Path, Served, Served], http_server: HTTPTestServer
) -> None:
    root, _old, new = upgraded
    assert cli("rollback", "--root", root).code == 0
    http_server.set_fault(f"/dl/{new.release.name}", Status(404))
    http_server.clear_requests()

    run = cli(*install_args(root, new))

    assert run.code == 0, run.out
    assert "the complete release kept in" in run.step("Lemonade release")["detail"]
    assert http_server.requests == []
    assert (_live_version(root), _previous_version(root)) == ("10.6.1", "10.6.0")
    again = cli(*install_args(root, new))
    assert again.json["changed"] is False


def test_rollback_dry_run_changes_nothing(cli: CLI, upgraded: tuple[Path, Served, Served]) -> None:
    root, _, _ = upgraded
    before = snapshot(root)
    run = cli("rollback", "--root", root, "--dry-run")
    assert run.code == 0
    assert "Dry run: nothing is changed" in run.out
    assert "-version 10.6.1" in run.out and "+version 10.6.0" in run.out
    assert snapshot(root) == before


def test_rollback_without_a_previous_release_refuses(
    cli: CLI, installed: tuple[Path, Served]
) -> None:
    root, _ = installed
    before = snapshot(root, dir_mtimes=False)
    run = cli("rollback", "--root", root)
    assert run.code == 1
    assert "error: no previous release to roll back to" in run.err
    assert "Traceback" not in run.err
    assert snapshot(root, dir_mtimes=False) == before


def test_rollback_to_a_damaged_release_refuses(
    cli: CLI, upgraded: tuple[Path, Served, Served]
) -> None:
    root, _, _ = upgraded
    (root / "opt/lemonade.releases/previous/lemonade").unlink()
    before = snapshot(root, dir_mtimes=False)
    run = cli("rollback", "--root", root, "--json")
    assert run.code == 1
    assert "is not intact: lemonade is missing" in run.json["error"]
    assert snapshot(root, dir_mtimes=False) == before


def test_rollback_of_an_empty_root_refuses(cli: CLI, root: Path) -> None:
    run = cli("rollback", "--root", root)
    assert run.code == 1
    assert "nothing to roll back: /opt/lemonade is not an installed release" in run.err


# -- the automatic rollback after an upgrade that does not become healthy ---------------------


class ProcessSystemd:
    """Stands in for `systemctl` ONLY, because no systemd runs on this host (the booted-systemd
    e2e suite covers the real one).  Everything else is real: `restart` starts the real
    (stand-in) lemond from whatever /opt/lemonade points at right now, as ExecStart would, and
    `show` reports that real process's state; health is polled over real HTTP."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.calls: list[tuple[str, ...]] = []
        self.proc: subprocess.Popen[bytes] | None = None

    def run(
        self,
        argv: Sequence[str],
        *,
        check: bool = True,
        timeout: float = 60.0,
        run_as: Identity | None = None,
        env: Mapping[str, str] | None = None,
    ) -> CommandResult:
        assert run_as is None and env is None  # systemctl runs as root, in the fixed env
        args = tuple(argv)
        self.calls.append(args)
        if args == ("systemctl", "restart", SERVICE_NAME):
            self.stop()
            self.proc = subprocess.Popen(
                [self.root / "opt/lemonade/lemond", self.root / "var/lib/hal0/lemonade"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
            return CommandResult(args, 0, "", "")
        if args[:2] == ("systemctl", "show"):
            return CommandResult(args, 0, self._show(), "")
        if args == ("systemctl", "reset-failed", SERVICE_NAME):
            return CommandResult(args, 0, "", "")  # no start-rate counter to clear here
        raise AssertionError(f"unexpected command {args}")

    def _show(self) -> str:
        if self.proc is None:
            state = ("inactive", "dead", "0")
        elif (rc := self.proc.poll()) is None:
            state = ("active", "running", "0")
        else:
            state = ("failed", "failed", str(rc))
        return "ActiveState={}\nSubState={}\nExecMainStatus={}\nNRestarts=0\n".format(*state)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)


@pytest.fixture
def bad_upgrade(
    cli: CLI, installed: tuple[Path, Served], served: Callable[..., Served]
) -> Iterator[tuple[Path, int, ProcessSystemd]]:
    """10.6.0, then a 10.6.1 whose lemond exits at start; lemond on a free port."""
    root, _ = installed
    bad = served("10.6.1", fail_at_start=True)
    assert cli(*install_args(root, bad)).code == 0
    port = free_port()
    config = root / "var/lib/hal0/lemonade/config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "port": port}))
    systemd = ProcessSystemd(root)
    try:
        yield root, port, systemd
    finally:
        systemd.stop()


def _ready(systemd: ProcessSystemd, port: int, roll_back: Callable[[], str] | None) -> str:
    systemd.run(["systemctl", "restart", SERVICE_NAME])  # what the plan's restart action does
    return service.ready_or_roll_back(
        systemd, host="127.0.0.1", port=port, start_timeout=10, health_timeout=10,
        roll_back=roll_back,
    )  # fmt: skip


def test_an_unhealthy_upgrade_rolls_back_restarts_and_says_so(
    bad_upgrade: tuple[Path, int, ProcessSystemd],
) -> None:
    root, port, systemd = bad_upgrade
    layout = Layout(root)
    with pytest.raises(ServiceError) as failed:
        _ready(systemd, port, lambda: release_links.roll_back(layout))
    message = failed.value.message
    assert "is failed (failed), last exit status 1" in message
    assert "automatically rolled back from 10.6.1 to 10.6.0" in message
    assert f"active and healthy on 127.0.0.1:{port} (lemond 10.6.0)" in message
    assert "previous release is live and serving again" in failed.value.hint
    assert (_live_version(root), _previous_version(root)) == ("10.6.0", "10.6.1")
    restarts = [c for c in systemd.calls if c[1] == "restart"]
    assert len(restarts) == 2
    assert systemd.proc is not None and systemd.proc.poll() is None, "10.6.0 is serving"


def test_without_a_version_change_nothing_is_rolled_back(
    bad_upgrade: tuple[Path, int, ProcessSystemd],
) -> None:
    root, port, systemd = bad_upgrade
    with pytest.raises(ServiceError) as failed:
        _ready(systemd, port, None)
    assert "rolled back" not in failed.value.message
    assert _live_version(root) == "10.6.1"
    assert len([c for c in systemd.calls if c[1] == "restart"]) == 1


def test_when_the_previous_release_fails_too_the_error_says_both(
    bad_upgrade: tuple[Path, int, ProcessSystemd],
) -> None:
    root, port, systemd = bad_upgrade
    layout = Layout(root)
    # Make the release we would go back to unable to start as well (same size, so the
    # rollback's integrity check still passes: this is about the service, not the files).
    previous = root / "opt/lemonade.releases/previous/lemond"
    text = previous.read_text()
    previous.write_text(text.replace("FAIL_AT_START = False ", "FAIL_AT_START = True  "))
    assert previous.stat().st_size == len(text.encode())
    with pytest.raises(ServiceError) as failed:
        _ready(systemd, port, lambda: release_links.roll_back(layout))
    assert "automatically rolled back from 10.6.1 to 10.6.0, but that did not come up" in (
        failed.value.message
    )
    assert _live_version(root) == "10.6.0"


def test_the_automatic_rollback_restores_the_config_the_old_release_ran_with(
    cli: CLI, installed: tuple[Path, Served], served: Callable[..., Served]
) -> None:
    """An unhealthy 11.x upgrade goes back to 10.x, and 10.x gets back its own version-1
    config: on the file 11.x's schema needs, 10.x would broadcast."""
    root, base = installed
    port = free_port()
    (root / "etc/hal0").mkdir(parents=True)
    (root / "etc/hal0/lemonade.toml").write_text(f"port = {port}\n")
    assert cli(*install_args(root, base)).code == 0
    config = root / "var/lib/hal0/lemonade/config.json"
    v1 = config.read_bytes()
    broken = served("11.7.0", fail_at_start=True)
    assert cli(*install_args(root, broken)).code == 0
    assert json.loads(config.read_text())["config_version"] == 2
    host = Host(Layout(root), SubprocessRunner(), Environment.read({}))
    wanted = settings.build(host, settings.Request())
    systemd = ProcessSystemd(root)
    try:
        with pytest.raises(ServiceError) as failed:
            _ready(systemd, port, lambda: install.roll_back(wanted))
    finally:
        systemd.stop()
    assert (
        "automatically rolled back from 11.7.0 to 10.6.0 (with the config it ran with): "
        "active and healthy"
    ) in failed.value.message
    assert _live_version(root) == "10.6.0"
    assert config.read_bytes() == v1  # what 10.6.0 ran with, no_broadcast and all
    kept = root / "opt/lemonade.releases" / f"{_previous_target(root)}.config.json"
    assert json.loads(kept.read_text())["config_version"] == 2  # 11.x's, for going forward
