"""``hal0-lemonade uninstall``: install's steps in reverse, as a plan of the same kind.

stop -> disable -> remove the unit and its drop-ins (daemon-reload) -> remove the release
trees and the download cache.  The daemon's state and models (``/var/lib/hal0``) and the
``hal0`` account are kept unless ``--purge``.  The operator's ``/etc/hal0/lemonade.toml`` is
always kept: it is theirs.  A converged (already removed) host yields an empty plan, so a
second run changes nothing.
"""

from __future__ import annotations

import shutil
from typing import Any

from hal0_lemonade import fsops, opconfig, plan
from hal0_lemonade.driver import Command, Context, Planner
from hal0_lemonade.hostfacts import Host
from hal0_lemonade.layout import SERVICE_GROUP, SERVICE_NAME, SERVICE_USER, HostPath, Layout
from hal0_lemonade.plan import Action, Step, command_action
from hal0_lemonade.resources import account, release, service
from hal0_lemonade.runner import CommandRunner


def _remove(path: HostPath, what: str = "") -> Action:
    def run() -> str:
        fsops.remove_tree(path.real)
        return f"removed {path}"

    return Action(f"remove {path}{f' ({what})' if what else ''}", run)


def _exists(path: HostPath) -> bool:
    return path.real.is_symlink() or path.real.exists()


def stop_step(host: Host) -> Step:
    step = Step("Service stop", hint=service.JOURNAL_HINT)
    if host.no_systemd:
        step.skip_reason = f"{host.no_systemd}: nothing to stop"
    elif host.running:
        argv = ["systemctl", "stop", SERVICE_NAME]
        step.actions.append(command_action(f"stop {SERVICE_NAME}", argv, host.runner))
    else:
        step.ok_detail = f"{SERVICE_NAME} is not running"
    return step


def disable_step(host: Host) -> Step:
    layout, runner, props = host.layout, host.runner, host.service
    step = Step("Service disable", hint=f"remove {layout.wants_link} by hand")
    linked = layout.wants_link.real.is_symlink()
    if props:
        if props.get("UnitFileState", "") in {"enabled", "enabled-runtime", "linked"} or linked:
            argv = ["systemctl", "disable", SERVICE_NAME]
            step.actions.append(command_action(f"disable {SERVICE_NAME}", argv, runner))
    elif linked and layout.unit.real.is_file():
        argv = ["systemctl", f"--root={layout.root}", "disable", SERVICE_NAME]
        step.actions.append(command_action(f"disable {SERVICE_NAME} (wants link)", argv, runner))
    elif linked:  # the unit is gone already: systemctl cannot disable it, the link dangles
        step.actions.append(_remove(layout.wants_link, "dangling wants link"))
    step.ok_detail = f"{SERVICE_NAME} is not enabled"
    return step


def unit_step(host: Host) -> Step:
    layout = host.layout
    step = Step("systemd unit", hint=f"remove {layout.unit} and {layout.dropin_dir} by hand")
    for path, what in ((layout.unit, ""), (layout.dropin_dir, "drop-ins")):
        if _exists(path):
            step.actions.append(_remove(path, what))
    if step.actions and host.systemd:
        argv = ["systemctl", "daemon-reload"]
        step.actions.append(command_action("systemctl daemon-reload", argv, host.runner))
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
        step.actions.append(command_action(f"delete user {SERVICE_USER}", argv, runner))
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


def kept(layout: Layout, *, purge: bool) -> list[str]:
    """What the uninstall leaves behind on purpose, for the closing line."""
    keep = [] if purge else [f"{layout.home} (config, models, caches)", f"user {SERVICE_USER}"]
    operator = layout.at(opconfig.PATH)
    if operator.real.exists():
        keep.append(f"{operator} (the operator's file)")
    return keep


def command(*, purge: bool) -> Command:
    def prepare(ctx: Context) -> Planner:
        return lambda: build(ctx)

    def build(ctx: Context) -> plan.Plan:
        host, layout = ctx.host, ctx.layout
        version = release.probe(layout).version or ""
        steps = [
            stop_step(host),
            disable_step(host),
            unit_step(host),
            release_step(layout),
            state_step(layout, purge=purge),
            account_step(layout, host.runner, purge=purge),
        ]

        def summary(result: plan.Result) -> str:
            changed = sum(s.status == plan.Status.CHANGED for s in result.steps)
            what = f"Lemonade {version}" if version else "hal0-lemonade"
            verdict = "removed" if changed else "nothing to remove"
            left = kept(layout, purge=purge)
            lines = [f"{what}: {verdict} ({changed} step(s) changed)"]
            if left:
                lines.append(f"kept: {'; '.join(left)}")
            return "\n".join(lines)

        def extra() -> dict[str, Any]:
            return {"kept": kept(layout, purge=purge)}

        return plan.Plan("uninstall", version, steps, summary, extra)

    return prepare
