"""Settings + host -> the plan of six steps; the install lock around applying it."""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Iterator

from hal0_lemonade import fetch, plan
from hal0_lemonade.errors import LockError
from hal0_lemonade.layout import Layout
from hal0_lemonade.resources import account, daemon_config, release, service, unit
from hal0_lemonade.runner import CommandRunner
from hal0_lemonade.settings import Settings

LOCK_WAIT_S = 60.0


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
) -> list[plan.Step]:
    layout = settings.layout
    installer = release.Installer(layout, http_timeout=http_timeout, progress=progress)
    steps = [
        pin_step(settings),
        release.plan(layout, settings.pin, release.probe(layout), installer),
        account.plan(layout, account.probe(layout), runner),
        daemon_config.plan(
            layout,
            daemon_config.baseline(
                threads=settings.threads,
                host=settings.host,
                port=settings.port,
                models_dir=str(layout.models_dir),
            ),
            daemon_config.probe(layout),
        ),
        unit.plan(
            layout, unit.render(host=settings.host, port=settings.port, cpus=settings.cpus), runner
        ),
    ]
    restart = any(s.changes for s in steps[1:])
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
        )
    )
    return steps


@contextlib.contextmanager
def install_lock(layout: Layout, wait: float = LOCK_WAIT_S) -> Iterator[None]:
    """One install at a time per root: a second waits ``wait`` seconds, then refuses."""
    path = layout.lock.real
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
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
