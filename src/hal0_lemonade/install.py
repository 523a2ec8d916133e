"""``hal0-lemonade install``: the operator's request and the host, as a plan of six steps.

Release pin -> Lemonade release -> Service account -> Daemon config -> systemd unit ->
Service start.  Each resource module (``resources/``) probes its part of the host and plans
what it would change; the driver prints the plan (``--dry-run``) or applies it under the lock.
"""

from __future__ import annotations

from collections.abc import Callable

from hal0_lemonade import failpoints, fetch, plan, settings
from hal0_lemonade.driver import Command, Context, Planner
from hal0_lemonade.resources import (
    account,
    daemon_config,
    installer,
    release,
    release_links,
    service,
    unit,
)
from hal0_lemonade.runner import CommandRunner
from hal0_lemonade.settings import Request, Settings


def command(request: Request) -> Command:
    def prepare(ctx: Context) -> Planner:
        # The request is checked here, before the driver takes the lock: a refused pin, a
        # malformed operator file or flag leaves the host exactly as it was.
        wanted = settings.build(ctx.host, request)
        release.check_source(ctx.layout, wanted.pin)
        if ctx.progress is not None:
            ctx.progress.label = f"Lemonade {wanted.pin.version}"

        def build() -> plan.Plan:
            steps = build_steps(wanted, ctx.host.runner, progress=ctx.progress)
            return plan.Plan("install", wanted.pin.version, steps, soft_step=service.STEP)

        return build

    return prepare


def pin_step(wanted: Settings) -> plan.Step:
    pin = wanted.pin
    digest = f"sha256 {pin.sha256[:12]}… ({pin.source})" if pin.verified else "UNVERIFIED"
    return plan.Step(
        "Release pin",
        ok_detail=f"Lemonade {pin.version}, {digest}; llamacpp --threads {wanted.threads} "
        f"from {wanted.threads_source}",
        notes=list(wanted.warnings),
    )


def build_steps(
    wanted: Settings, runner: CommandRunner, *, progress: fetch.Progress | None = None
) -> list[plan.Step]:
    layout = wanted.layout
    env = wanted.env
    fetcher = installer.Installer(
        layout,
        runner=runner,
        http_timeout=env.http_timeout,
        http_deadline=env.http_deadline,
        limits=env.limits,
        progress=progress,
    )
    was = release.probe(layout)
    # Shared by the release step (which learns the real schema and any switch of releases)
    # and the config step (which writes for it).
    fetcher.target = release.target_for(layout, wanted.pin, was, fetcher)
    steps = [
        pin_step(wanted),
        release.plan(layout, wanted.pin, was, fetcher, reinstall=wanted.reinstall),
        account.plan(layout, account.probe(layout), runner),
        daemon_config.plan(
            layout,
            wanted.intent,
            daemon_config.probe(layout, wanted.operator),
            fetcher.target,
        ),
        unit.plan(
            layout, unit.render(host=wanted.host, port=wanted.port, cpus=wanted.cpus), runner
        ),
    ]
    restart = any(s.changes for s in steps[1:])
    upgrade = steps[1].changes and was.target is not None and was.version != wanted.pin.version
    steps.append(
        service.plan(
            layout,
            service.probe(layout, runner, wanted.host, wanted.port),
            runner,
            host=wanted.host,
            port=wanted.port,
            start=wanted.start,
            restart=restart,
            start_timeout=wanted.start_timeout,
            health_timeout=wanted.health_timeout,
            # After a version change, an unhealthy service goes back to the release before.
            roll_back=(lambda: roll_back(wanted)) if upgrade else None,
        )
    )
    for step in steps:
        _instrument(step)
    return steps


def roll_back(wanted: Settings) -> str:
    """Put the previous release back live with the config it ran with (see config_history)."""
    layout = wanted.layout
    planned = release_links.rollback_plan(layout)
    swapped = release_links.roll_back(layout, planned)
    target = daemon_config.for_release(layout, planned.previous, switching=True)
    state = daemon_config.probe(layout, wanted.operator)
    intent = wanted.intent.as_ran_with(target.kept)
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
