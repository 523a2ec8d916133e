"""The running service: enabled, started (or restarted after a change), active and healthy."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import NamedTuple

from hal0_lemonade import fsops, health
from hal0_lemonade.errors import ServiceError
from hal0_lemonade.hostfacts import show, systemd_running
from hal0_lemonade.layout import SERVICE_NAME, Layout
from hal0_lemonade.plan import Action, Step
from hal0_lemonade.runner import CommandRunner

STEP = "Service start"
JOURNAL_HINT = (
    "see `journalctl -u hal0-lemonade -n 50`; the installed files are in place, so fix the "
    "cause and re-run, or `systemctl restart hal0-lemonade`"
)


NO_START_RECORD = b"install --no-start: the service is not enabled or started on purpose\n"


class ServiceState(NamedTuple):
    systemd: bool
    props: dict[str, str]
    enabled: bool
    healthy: bool
    held: bool = False  # the --no-start record is there

    @property
    def active(self) -> bool:
        return self.props.get("ActiveState") in {"active", "activating", "reloading"}


def held(layout: Layout) -> bool:
    """Did the last install run with --no-start?  (Root's file in root's directory.)"""
    return layout.no_start.real.is_file()


def probe(layout: Layout, runner: CommandRunner, host: str, port: int) -> ServiceState:
    if not systemd_running(layout):
        return ServiceState(False, {}, layout.wants_link.real.is_symlink(), False, held(layout))
    props = show(runner)
    healthy = props.get("ActiveState") == "active" and health.get_health(host, port) is not None
    enabled = props.get("UnitFileState") == "enabled"
    return ServiceState(True, props, enabled, healthy, held(layout))


def _record(layout: Layout, state: ServiceState, start: bool) -> Action | None:
    """Write or drop the --no-start record so that status tells a deliberate stop from a
    broken service."""
    path = layout.no_start
    if not start and not state.held:

        def write() -> str:
            fsops.atomic_write(path.real, NO_START_RECORD, mode=0o644)
            return f"recorded --no-start in {path}"

        return Action(f"record --no-start in {path}", write, diff=f"+ {path}\n")
    if start and state.held:

        def drop() -> str:
            path.real.unlink(missing_ok=True)
            fsops.fsync_dir(path.real.parent)
            return f"removed {path}"

        return Action(f"remove the --no-start record {path}", drop, diff=f"- {path}\n")
    return None


def _act(summary: str, argv: list[str], runner: CommandRunner) -> Action:
    def run() -> str:
        runner.run(argv, timeout=120)
        return summary

    return Action(summary, run, diff="$ " + " ".join(argv) + "\n")


def _enable(summary: str, argv: list[str], layout: Layout, runner: CommandRunner) -> Action:
    """``systemctl enable``, then durable: systemctl does not sync the wants link it makes, and
    a power cut that drops it leaves a service that no longer starts at boot although the
    install said it was enabled."""
    wants = layout.wants_link.real.parent

    def run() -> str:
        created = not wants.is_dir()
        runner.run(argv, timeout=120)
        if wants.is_dir():
            fsops.fsync_dir(wants)
            if created:  # the directory itself is a new entry of its parent
                fsops.fsync_dir(wants.parent)
        return summary

    return Action(summary, run, diff="$ " + " ".join(argv) + "\n")


def plan(
    layout: Layout,
    state: ServiceState,
    runner: CommandRunner,
    *,
    host: str,
    port: int,
    start: bool,
    restart: bool,
    start_timeout: float,
    health_timeout: float,
    roll_back: Callable[[], str] | None = None,
) -> Step:
    """``roll_back`` (given after a version change) swaps the previous release back live."""
    step = Step(STEP, hint=JOURNAL_HINT)
    record = _record(layout, state, start)
    if record is not None:
        step.actions.append(record)
    if not start:
        step.skip_reason = "--no-start: service not enabled or started"
        return step

    if not layout.is_host_root:
        if not state.enabled:
            argv = ["systemctl", f"--root={layout.root}", "enable", SERVICE_NAME]
            step.actions.append(
                _enable(f"enable {SERVICE_NAME} (wants link)", argv, layout, runner)
            )
        reason = f"not started: no systemd runs under --root {layout.root}"
        step.ok_detail = f"enabled; {reason}"
        step.verify = lambda: reason
        return step

    if not state.systemd:

        def refuse() -> str:
            raise ServiceError(
                "systemd is not running on this host (PID 1 is not systemd)",
                hint="boot the host with systemd, or re-run with --no-start to install only",
            )

        step.verify = refuse
        return step

    if not state.enabled:
        argv = ["systemctl", "enable", SERVICE_NAME]
        step.actions.append(_enable("enable", argv, layout, runner))
    if not state.active:

        def start_it() -> str:
            if health.port_in_use(host, port):
                raise ServiceError(
                    f"port {port} on {host} is already in use by another process",
                    hint=f"find it with `ss -ltnp 'sport = :{port}'` and stop it, then re-run",
                )
            # A unit that kept failing (the broken config this install just repaired) may
            # have used up its start budget: clear it, or the start is refused.
            runner.run(["systemctl", "reset-failed", SERVICE_NAME], check=False)
            runner.run(["systemctl", "start", SERVICE_NAME], timeout=120)
            return "started"

        step.actions.append(Action("start", start_it, diff=f"$ systemctl start {SERVICE_NAME}\n"))
    elif restart:

        def restart_it() -> str:
            restart_afresh(runner)
            return "restarted (config, unit or release changed)"

        step.actions.append(
            Action(
                "restart (config, unit or release changed)",
                restart_it,
                diff=f"$ systemctl reset-failed {SERVICE_NAME}\n"
                f"$ systemctl restart {SERVICE_NAME}\n",
            )
        )

    def verify() -> str:
        return ready_or_roll_back(
            runner,
            host=host,
            port=port,
            start_timeout=start_timeout,
            health_timeout=health_timeout,
            roll_back=roll_back,
        )

    step.verify = verify
    step.ok_detail = "active and healthy"
    return step


def _failure(props: dict[str, str]) -> str | None:
    active, sub = props.get("ActiveState", ""), props.get("SubState", "")
    if active == "failed" or sub in {"auto-restart", "failed", "dead"} or active == "inactive":
        status = props.get("ExecMainStatus", "?")
        return f"{SERVICE_NAME} is {active} ({sub}), last exit status {status}"
    return None


def wait_ready(
    runner: CommandRunner, host: str, port: int, start_timeout: float, health_timeout: float
) -> str:
    deadline = time.monotonic() + start_timeout
    props = show(runner)
    while props.get("ActiveState") != "active":
        problem = _failure(props) if props.get("ActiveState") != "activating" else None
        if problem or time.monotonic() > deadline:
            raise ServiceError(
                problem or f"{SERVICE_NAME} did not become active within {start_timeout:g} s",
                hint=JOURNAL_HINT,
            )
        time.sleep(0.1)
        props = show(runner)
    restarts = props.get("NRestarts", "0")

    def still_running() -> str | None:
        now = show(runner)
        if now.get("NRestarts", "0") != restarts:
            return f"{SERVICE_NAME} exited and is being restarted (exit status " + (
                now.get("ExecMainStatus", "?") + ")"
            )
        return _failure(now)

    answer = health.wait_healthy(host, port, timeout=health_timeout, still_running=still_running)
    if answer is None:
        problem = still_running()
        raise ServiceError(
            problem
            or f"lemond did not answer {health.HEALTH_PATH} on {host}:{port} "
            f"within {health_timeout:g} s",
            hint=JOURNAL_HINT,
        )
    version = answer.get("version")
    return f"active and healthy on {host}:{port}" + (f" (lemond {version})" if version else "")


def restart_afresh(runner: CommandRunner) -> None:
    """Restart with systemd's start-rate counter cleared first (``reset-failed`` resets it on
    an active unit too): a daemon that just failed and was restarted by
    ``Restart=on-failure``, or a few quick restarts, use up the unit's start budget (5 in
    10 s), and the restart that applies a repair or brings the good release back must not be
    refused with ``start-limit-hit``."""
    runner.run(["systemctl", "reset-failed", SERVICE_NAME], check=False)
    runner.run(["systemctl", "restart", SERVICE_NAME], timeout=120)


ROLLBACK_HINT = (
    "the previous release is live and serving again; see `journalctl -u hal0-lemonade -n 50` "
    "for why the new one failed before installing it again"
)


def ready_or_roll_back(
    runner: CommandRunner,
    *,
    host: str,
    port: int,
    start_timeout: float,
    health_timeout: float,
    roll_back: Callable[[], str] | None,
) -> str:
    """Wait for active and healthy; if that fails and ``roll_back`` is given, go back.

    Rolling back swaps the previous release live, restarts the service and waits again.
    Either way a failure to become healthy is an error (the release asked for is not the one
    running), but the message says which release is serving now.
    """
    try:
        return wait_ready(runner, host, port, start_timeout, health_timeout)
    except ServiceError as failed:
        if roll_back is None:
            raise
        swapped = roll_back()
        restart_afresh(runner)
        try:
            ready = wait_ready(runner, host, port, start_timeout, health_timeout)
        except ServiceError as again:
            raise ServiceError(
                f"{failed.message}; automatically {swapped}, but that did not come up "
                f"either: {again.message}",
                hint=JOURNAL_HINT,
            ) from again
        raise ServiceError(
            f"{failed.message}; automatically {swapped}: {ready}", hint=ROLLBACK_HINT
        ) from failed
