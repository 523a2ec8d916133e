"""Settings + host -> the plan of six steps; the install lock around applying it."""

from __future__ import annotations

import contextlib
import fcntl
import os
import stat
import time
from collections.abc import Callable, Iterator

from hal0_lemonade import archive, failpoints, fetch, plan, safefs
from hal0_lemonade.errors import LockError, UsageError
from hal0_lemonade.layout import Layout
from hal0_lemonade.oserrors import explain
from hal0_lemonade.resources import account, daemon_config, release, service, unit
from hal0_lemonade.runner import CommandRunner
from hal0_lemonade.settings import Settings

LOCK_WAIT_S = 60.0
LOCK_WAIT_ENV = "HAL0_LEMONADE_LOCK_WAIT"


def pin_step(settings: Settings) -> plan.Step:
    pin = settings.pin
    digest = f"sha256 {pin.sha256[:12]}… ({pin.source})" if pin.verified else "UNVERIFIED"
    return plan.Step(
        "Release pin",
        ok_detail=f"Lemonade {pin.version}, {digest}; llamacpp --threads {settings.threads} "
        f"from {settings.threads_source}",
        notes=list(settings.warnings),
    )


def build_steps(
    settings: Settings,
    runner: CommandRunner,
    *,
    progress: fetch.Progress | None = None,
    http_timeout: float = 30.0,
    http_deadline: float = 1800.0,
) -> list[plan.Step]:
    layout = settings.layout
    installer = release.Installer(
        layout,
        runner=runner,
        http_timeout=http_timeout,
        http_deadline=http_deadline,
        limits=archive.Limits.from_env(),
        progress=progress,
    )
    was = release.probe(layout)
    # Shared by the release step (which learns the real schema and any switch of releases)
    # and the config step (which writes for it).
    installer.target = release.target_for(layout, settings.pin, was, installer)
    steps = [
        pin_step(settings),
        release.plan(layout, settings.pin, was, installer, reinstall=settings.reinstall),
        account.plan(layout, account.probe(layout), runner),
        daemon_config.plan(
            layout,
            settings.intent,
            daemon_config.probe(layout, settings.operator),
            installer.target,
        ),
        unit.plan(
            layout, unit.render(host=settings.host, port=settings.port, cpus=settings.cpus), runner
        ),
    ]
    restart = any(s.changes for s in steps[1:])
    upgrade = steps[1].changes and was.target is not None and was.version != settings.pin.version
    steps.append(
        service.plan(
            layout,
            service.probe(layout, runner, settings.host, settings.port),
            runner,
            host=settings.host,
            port=settings.port,
            start=settings.start,
            restart=restart,
            start_timeout=settings.start_timeout,
            health_timeout=settings.health_timeout,
            # After a version change, an unhealthy service goes back to the release before.
            roll_back=(lambda: roll_back(settings)) if upgrade else None,
        )
    )
    for step in steps:
        _instrument(step)
    return steps


def roll_back(settings: Settings) -> str:
    """Put the previous release back live with the config it ran with (see config_history)."""
    layout = settings.layout
    planned = release.rollback_plan(layout)
    swapped = release.roll_back(layout, planned)
    target = daemon_config.for_release(layout, planned.previous, switching=True)
    state = daemon_config.probe(layout, settings.operator)
    intent = settings.intent.as_ran_with(target.kept)
    daemon_config.converge(layout, state, intent, target)
    how = "with the config it ran with" if target.kept is not None else "config re-rendered"
    return f"{swapped} ({how})"


def _instrument(step: plan.Step) -> None:
    """Kill points at the step's boundaries and between its actions (see failpoints)."""
    slug = step.name.lower().replace(" ", "-")
    if not step.actions and step.verify is None:
        return
    for index, action in enumerate(step.actions):
        inner = action.run

        def run(inner: Callable[[], str | None] = inner, index: int = index) -> str | None:
            failpoints.hit(f"step.{slug}.begin" if index == 0 else f"step.{slug}.action")
            return inner()

        action.run = run
    verify = step.verify

    def verify_last() -> str:
        if not step.actions:
            failpoints.hit(f"step.{slug}.begin")
        detail = verify() if verify is not None else ""
        failpoints.hit(f"step.{slug}.end")
        return detail

    step.verify = verify_last


def lock_wait() -> float:
    """Seconds a second install waits for the lock: ``HAL0_LEMONADE_LOCK_WAIT`` or 60."""
    raw = os.environ.get(LOCK_WAIT_ENV, "").strip()
    if not raw:
        return LOCK_WAIT_S
    try:
        wait = float(raw)
    except ValueError:
        wait = -1.0
    if not 0 <= wait < float("inf"):
        raise UsageError(f"{LOCK_WAIT_ENV}={raw!r} is not a number of seconds")
    return wait


def _open_lock(layout: Layout) -> int:
    """The lock file, in a directory only root can write, opened without following a link."""
    name = layout.lock.host.name
    flags = os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
    try:
        run = safefs.open_root_dir(layout, layout.lock.host.parent.parts[1:], create=True)
    except OSError as exc:
        raise explain(exc, step="Install lock") from exc
    try:
        try:
            fd = os.open(name, os.O_RDWR | os.O_CREAT | flags, 0o600, dir_fd=run)
        except OSError as exc:
            # A read-only target: flock works on a read-only descriptor of an existing file,
            # and the steps then fail with a clear error at their first write.
            try:
                fd = os.open(name, os.O_RDONLY | flags, dir_fd=run)
            except OSError:
                raise explain(exc, step="Install lock") from exc
    finally:
        os.close(run)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise LockError(f"{layout.lock} is not a regular file", hint=f"remove {layout.lock}")
    return fd


@contextlib.contextmanager
def install_lock(layout: Layout, wait: float | None = None) -> Iterator[None]:
    """One install at a time per root: a second waits ``wait`` seconds, then refuses."""
    wait = lock_wait() if wait is None else wait
    fd = _open_lock(layout)
    try:
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise LockError(
                        f"another hal0-lemonade install holds {layout.lock} (waited {wait:g} s)",
                        hint="wait for it to finish; the lock is released when it exits",
                    ) from None
                time.sleep(0.1)
        yield
    finally:
        os.close(fd)
