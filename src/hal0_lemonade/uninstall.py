"""`hal0-lemonade uninstall`: install's steps in reverse, as a plan of the same kind.

stop -> disable -> remove the unit and its drop-ins (daemon-reload) -> remove the release
trees and the download cache.  The daemon's state and models (``/var/lib/hal0``) and the
``hal0`` account are kept unless ``--purge``.  The operator's ``/etc/hal0/lemonade.toml`` is
always kept: it is theirs.  A converged (already removed) host yields an empty plan, so a
second run changes nothing.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import click

from hal0_lemonade import engine, fsops, opconfig, plan, report
from hal0_lemonade.clikit import (
    EXIT_FAIL,
    EXIT_OK,
    guard,
    json_option,
    root_option,
    step_numbering_options,
)
from hal0_lemonade.errors import Hal0Error
from hal0_lemonade.layout import SERVICE_GROUP, SERVICE_NAME, SERVICE_USER, HostPath, Layout
from hal0_lemonade.plan import Action, Step
from hal0_lemonade.resources import account, release, service
from hal0_lemonade.resources.unit import systemd_running
from hal0_lemonade.runner import CommandRunner, SubprocessRunner

_ACTIVE = {"active", "activating", "reloading", "deactivating"}


def _command(summary: str, argv: list[str], runner: CommandRunner) -> Action:
    def run() -> str:
        runner.run(argv, timeout=120)
        return summary

    return Action(summary, run, diff="$ " + " ".join(argv) + "\n")


def _remove(path: HostPath, what: str = "") -> Action:
    def run() -> str:
        fsops.remove_tree(path.real)
        return f"removed {path}"

    return Action(f"remove {path}{f' ({what})' if what else ''}", run)


def _exists(path: HostPath) -> bool:
    return path.real.is_symlink() or path.real.exists()


def stop_step(layout: Layout, runner: CommandRunner, props: dict[str, str]) -> Step:
    step = Step("Service stop", hint=service.JOURNAL_HINT)
    if not layout.is_host_root:
        step.skip_reason = f"no systemd runs under --root {layout.root}: nothing to stop"
    elif not props:
        step.ok_detail = "systemd is not running: nothing to stop"
    elif props.get("ActiveState") in _ACTIVE or props.get("SubState") == "auto-restart":
        argv = ["systemctl", "stop", SERVICE_NAME]
        step.actions.append(_command(f"stop {SERVICE_NAME}", argv, runner))
    else:
        step.ok_detail = f"{SERVICE_NAME} is not running"
    return step


def disable_step(layout: Layout, runner: CommandRunner, props: dict[str, str]) -> Step:
    step = Step("Service disable", hint=f"remove {layout.wants_link} by hand")
    linked = layout.wants_link.real.is_symlink()
    if props:
        if props.get("UnitFileState", "") in {"enabled", "enabled-runtime", "linked"} or linked:
            argv = ["systemctl", "disable", SERVICE_NAME]
            step.actions.append(_command(f"disable {SERVICE_NAME}", argv, runner))
    elif linked and layout.unit.real.is_file():
        argv = ["systemctl", f"--root={layout.root}", "disable", SERVICE_NAME]
        step.actions.append(_command(f"disable {SERVICE_NAME} (wants link)", argv, runner))
    elif linked:  # the unit is gone already: systemctl cannot disable it, the link dangles
        step.actions.append(_remove(layout.wants_link, "dangling wants link"))
    step.ok_detail = f"{SERVICE_NAME} is not enabled"
    return step


def unit_step(layout: Layout, runner: CommandRunner) -> Step:
    step = Step("systemd unit", hint=f"remove {layout.unit} and {layout.dropin_dir} by hand")
    for path, what in ((layout.unit, ""), (layout.dropin_dir, "drop-ins")):
        if _exists(path):
            step.actions.append(_remove(path, what))
    if step.actions and systemd_running(layout):

        def reload() -> str:
            runner.run(["systemctl", "daemon-reload"])
            return "systemctl daemon-reload"

        step.actions.append(Action("systemctl daemon-reload", reload))
    step.ok_detail = f"no {layout.unit}"
    return step


def release_step(layout: Layout) -> Step:
    step = Step("Lemonade release", hint="remove the listed paths by hand")
    # The live link first: /opt/lemonade never points into a half-removed tree.
    paths = (
        (layout.live, "the live release"),
        (layout.releases, "all releases"),
        (layout.download_cache, "the download cache"),
    )
    for path, what in paths:
        if _exists(path):
            step.actions.append(_remove(path, what))
    step.ok_detail = f"no {layout.live}"
    return step


def state_step(layout: Layout, *, purge: bool) -> Step:
    step = Step("Daemon state", hint=f"remove {layout.home} by hand")
    if not purge:
        step.skip_reason = f"kept {layout.home} (config, models, caches); --purge removes it"
    elif _exists(layout.home):
        # hal0 owns everything below its home and may have planted links to /etc there.
        # shutil.rmtree walks by directory fds and unlinks links without following them where
        # the platform allows (Linux); anywhere it cannot, refuse rather than follow.
        if not shutil.rmtree.avoids_symlink_attacks:
            step.hint = f"remove {layout.home} by hand, with a tool that does not follow links"
            step.skip_reason = "this platform's rmtree could follow links hal0 planted"
        else:
            step.actions.append(_remove(layout.home, "state, models and caches"))
    step.ok_detail = f"no {layout.home}"
    return step


def account_step(layout: Layout, runner: CommandRunner, *, purge: bool) -> Step:
    step = Step("Service account", hint=f"`userdel {SERVICE_USER}; groupdel {SERVICE_GROUP}`")
    if not purge:
        step.skip_reason = f"kept user {SERVICE_USER}; --purge removes it"
        return step
    prefix = [] if layout.is_host_root else ["--prefix", str(layout.root)]
    accounts = account.probe(layout)
    if SERVICE_USER in accounts.users:
        argv = ["userdel", *prefix, SERVICE_USER]
        step.actions.append(_command(f"delete user {SERVICE_USER}", argv, runner))
    if SERVICE_GROUP in accounts.groups:
        argv = ["groupdel", *prefix, SERVICE_GROUP]

        def delete_group() -> str:
            # userdel drops the user's private group itself where USERGROUPS_ENAB is set.
            if SERVICE_GROUP not in account.probe(layout).groups:
                return f"group {SERVICE_GROUP} went with the user"
            runner.run(argv)
            return f"deleted group {SERVICE_GROUP}"

        step.actions.append(
            Action(f"delete group {SERVICE_GROUP}", delete_group, diff=f"$ {' '.join(argv)}\n")
        )
    step.ok_detail = f"no {SERVICE_USER} account"
    return step


def build_steps(layout: Layout, runner: CommandRunner, *, purge: bool) -> list[Step]:
    props = service.show(runner) if systemd_running(layout) else {}
    return [
        stop_step(layout, runner, props),
        disable_step(layout, runner, props),
        unit_step(layout, runner),
        release_step(layout),
        state_step(layout, purge=purge),
        account_step(layout, runner, purge=purge),
    ]


def kept(layout: Layout, *, purge: bool) -> list[str]:
    """What the uninstall leaves behind on purpose, for the closing line."""
    keep = [] if purge else [f"{layout.home} (config, models, caches)", f"user {SERVICE_USER}"]
    operator = layout.at(opconfig.PATH)
    if operator.real.exists():
        keep.append(f"{operator} (the operator's file)")
    return keep


EXAMPLES = """
\b
Examples:
  sudo hal0-lemonade uninstall --dry-run    # show what would be removed
  sudo hal0-lemonade uninstall              # remove service, unit and release; keep state
  sudo hal0-lemonade uninstall --purge      # also remove /var/lib/hal0 and the hal0 account
"""


@click.command("uninstall", epilog=EXAMPLES)
@root_option()
@click.option("--purge", is_flag=True, help="Also remove /var/lib/hal0 and the hal0 account.")
@click.option("--dry-run", is_flag=True, help="Print what would be removed; change nothing.")
@json_option()
@click.option("--debug", is_flag=True, help="Show tracebacks.")
@step_numbering_options()
def command(**opts: Any) -> int:
    """Stop and remove the hal0-lemonade service and the Lemonade release."""
    return guard(opts["as_json"], opts["debug"], lambda: _uninstall(**opts))


def _uninstall(
    *,
    root: Path,
    purge: bool,
    dry_run: bool,
    as_json: bool,
    debug: bool,
    step_offset: int,
    step_total: int | None,
) -> int:
    del debug  # handled by guard
    layout = Layout(root)
    if not dry_run and layout.is_host_root and os.geteuid() != 0:
        raise Hal0Error(
            "uninstalling from / needs root privileges",
            hint="run it with sudo, or use --dry-run to see the plan",
        )
    runner = SubprocessRunner()
    version = release.probe(layout).version or ""
    human = report.HumanReporter(numbering=report.Numbering(step_offset, step_total))
    if dry_run:
        steps = build_steps(layout, runner, purge=purge)
        if as_json:
            report.dump_json(report.result_json(report.plan_result(steps, version), steps))
        else:
            human.plan(steps, command="uninstall")
        return EXIT_OK
    reporter: plan.Reporter = report.QuietReporter() if as_json else human
    with engine.install_lock(layout):
        steps = build_steps(layout, runner, purge=purge)
        result = plan.apply(steps, version, reporter)
    left = kept(layout, purge=purge)
    if as_json:
        report.dump_json({**report.result_json(result), "kept": left})
    elif result.error is not None:
        human.error(result.error)
    else:
        changed = sum(s.status == plan.Status.CHANGED for s in result.steps)
        what = f"Lemonade {version}" if version else "hal0-lemonade"
        human.out.write(
            f"{what}: {'removed' if changed else 'nothing to remove'} ({changed} step(s) changed)\n"
        )
        if left:
            human.out.write(f"kept: {'; '.join(left)}\n")
    return EXIT_OK if result.ok else EXIT_FAIL
