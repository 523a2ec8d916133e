"""``hal0-lemonade rollback``: the previous release back live, with the config it ran with.

The same swap the installer does by itself when a new version does not become healthy.  It
needs no network: both releases are complete trees under /opt/lemonade.releases.
"""

from __future__ import annotations

from hal0_lemonade import plan, settings
from hal0_lemonade.driver import Context, Planner
from hal0_lemonade.hostfacts import LISTEN_HOST
from hal0_lemonade.layout import SERVICE_NAME
from hal0_lemonade.resources import daemon_config, release_links, service
from hal0_lemonade.settings import HEALTH_TIMEOUT_S, START_TIMEOUT_S

STEP_RELEASE = "Release rollback"
STEP_SERVICE = "Service restart"


def command(ctx: Context) -> Planner:
    return lambda: build(ctx)


def build(ctx: Context) -> plan.Plan:
    """Three steps: swap the links, bring back the config, restart the service."""
    layout, host = ctx.layout, ctx.host
    planned = release_links.rollback_plan(layout)
    intent, _ = settings.intent_for(host)
    swap = plan.Step(
        STEP_RELEASE,
        hint="re-run the rollback; each link is switched by one atomic rename",
    )
    swap.actions.append(
        plan.Action(
            f"point {layout.live} at {layout.releases}/{planned.previous} "
            f"({planned.previous_version}); keep {planned.current} "
            f"({planned.current_version}) as previous, with the config it ran with",
            lambda: release_links.roll_back(layout, planned),
            diff=f"-version {planned.current_version}\n+version {planned.previous_version}\n",
        )
    )
    # The config the previous release ran with comes back with it: a 10.x reading the file
    # 11.x migrated would broadcast on every interface.
    target = daemon_config.for_release(layout, planned.previous, switching=True)
    intent = intent.as_ran_with(target.kept)
    config = daemon_config.plan(layout, intent, daemon_config.probe(layout, host.operator), target)
    restart = plan.Step(STEP_SERVICE, hint=service.JOURNAL_HINT)
    if host.no_systemd:
        restart.skip_reason = f"not restarted: {host.no_systemd}"
    elif not host.running:
        restart.skip_reason = (
            f"{SERVICE_NAME} is not running; it uses {planned.previous_version} when started"
        )
    else:

        def restart_it() -> str:
            service.restart_afresh(host.runner)
            return service.wait_ready(
                host.runner, LISTEN_HOST, intent.port, START_TIMEOUT_S, HEALTH_TIMEOUT_S
            )

        restart.actions.append(
            plan.Action("restart", restart_it, diff=f"$ systemctl restart {SERVICE_NAME}\n")
        )

    def summary(result: plan.Result) -> str:
        return f"Lemonade {planned.previous_version}: live again, rolled back from " + (
            f"{planned.current_version}"
        )

    return plan.Plan("rollback", planned.previous_version, [swap, config, restart], summary)
