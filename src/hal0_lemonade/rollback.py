"""`hal0-lemonade rollback`: put the previous release back live and restart the service.

The same swap the installer does by itself when a new version does not become healthy.  It
needs no network: both releases are complete trees under /opt/lemonade.releases.
"""

from __future__ import annotations

import os
from pathlib import Path

import click

from hal0_lemonade import engine, plan, report, settings
from hal0_lemonade.clikit import EXIT_FAIL, EXIT_OK, guard, json_option, root_option
from hal0_lemonade.errors import Hal0Error
from hal0_lemonade.layout import SERVICE_NAME, Layout
from hal0_lemonade.resources import daemon_config, release, service
from hal0_lemonade.resources.unit import systemd_running
from hal0_lemonade.runner import CommandRunner, SubprocessRunner
from hal0_lemonade.settings import HEALTH_TIMEOUT_S, LISTEN_HOST, START_TIMEOUT_S

STEP_RELEASE = "Release rollback"
STEP_SERVICE = "Service restart"


def build_steps(layout: Layout, runner: CommandRunner) -> tuple[list[plan.Step], str]:
    """The steps of a rollback, and the version it goes back to."""
    planned = release.rollback_plan(layout)
    intent, operator, _, _ = settings.intent_for(layout)
    swap = plan.Step(
        STEP_RELEASE,
        hint="re-run the rollback; each link is switched by one atomic rename",
    )
    swap.actions.append(
        plan.Action(
            f"point {layout.live} at {layout.releases}/{planned.previous} "
            f"({planned.previous_version}); keep {planned.current} "
            f"({planned.current_version}) as previous, with the config it ran with",
            lambda: release.roll_back(layout, planned),
            diff=f"-version {planned.current_version}\n+version {planned.previous_version}\n",
        )
    )
    # The config the previous release ran with comes back with it: a 10.x reading the file
    # 11.x migrated would broadcast on every interface.
    target = daemon_config.for_release(layout, planned.previous, switching=True)
    intent = intent.as_ran_with(target.kept)
    config = daemon_config.plan(layout, intent, daemon_config.probe(layout, operator), target)
    restart = plan.Step(STEP_SERVICE, hint=service.JOURNAL_HINT)
    state = service.probe(layout, runner, LISTEN_HOST, intent.port)
    if not layout.is_host_root:
        restart.skip_reason = f"not restarted: no systemd runs under --root {layout.root}"
    elif not systemd_running(layout):
        restart.skip_reason = "not restarted: systemd is not running on this host"
    elif not state.active:
        restart.skip_reason = (
            f"{SERVICE_NAME} is not running; it uses {planned.previous_version} when started"
        )
    else:

        def restart_it() -> str:
            service.restart_afresh(runner)
            return service.wait_ready(
                runner, LISTEN_HOST, intent.port, START_TIMEOUT_S, HEALTH_TIMEOUT_S
            )

        restart.actions.append(
            plan.Action("restart", restart_it, diff=f"$ systemctl restart {SERVICE_NAME}\n")
        )
    return [swap, config, restart], planned.previous_version


def run(root: Path, *, as_json: bool, dry_run: bool) -> int:
    layout = Layout(root)
    if not dry_run and layout.is_host_root and os.geteuid() != 0:
        raise Hal0Error(
            "rolling back / needs root privileges",
            hint="run it with sudo, or use --dry-run to see what it would do",
        )
    runner = SubprocessRunner()
    human = report.HumanReporter()
    if dry_run:
        steps, version = build_steps(layout, runner)
        if as_json:
            report.dump_json(report.result_json(report.plan_result(steps, version), steps))
        else:
            human.plan(steps)
        return EXIT_OK
    with engine.install_lock(layout):
        steps, version = build_steps(layout, runner)
        reporter: plan.Reporter = report.QuietReporter() if as_json else human
        result = plan.apply(steps, version, reporter)
    if as_json:
        report.dump_json(report.result_json(result))
    else:
        human.finish(result)
    return EXIT_OK if result.ok else EXIT_FAIL


ROLLBACK_EXAMPLES = """
\b
Examples:
  sudo hal0-lemonade rollback --dry-run   # which release would go live again
  sudo hal0-lemonade rollback             # swap it back live, restart, wait for health
  hal0-lemonade rollback --root /tmp/sandbox --json
"""


@click.command("rollback", epilog=ROLLBACK_EXAMPLES)
@root_option()
@json_option()
@click.option("--dry-run", is_flag=True, help="Show what would be switched; change nothing.")
@click.option("--debug", is_flag=True, help="Show tracebacks.")
def rollback_cmd(root: Path, as_json: bool, dry_run: bool, debug: bool) -> int:
    """Switch back to the previous Lemonade release and restart the service."""
    return guard(as_json, debug, lambda: run(root, as_json=as_json, dry_run=dry_run))
