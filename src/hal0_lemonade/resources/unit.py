"""The systemd unit /etc/systemd/system/hal0-lemonade.service, rendered from a template.

Two deliberate differences from the unit hal0's bash installer wrote: ``CPUQuota`` is 80% of
the machine's CPUs (systemd counts percent of *one* CPU, so its ``80%`` capped lemond at 0.8
of a core),
and the unit is sandboxed (see the template and README's security model).
"""

from __future__ import annotations

import string

from hal0_lemonade import fsops, pkgdata
from hal0_lemonade.hostfacts import systemd_running
from hal0_lemonade.layout import SERVICE_NAME, Layout
from hal0_lemonade.plan import Action, Step, file_diff
from hal0_lemonade.runner import CommandRunner

STEP = "systemd unit"
CPU_SHARE_PERCENT = 80


def render(*, host: str, port: int, cpus: int) -> bytes:
    template = pkgdata.read_text(f"templates/{SERVICE_NAME}")
    text = string.Template(template).substitute(
        host=host, port=port, cpus=cpus, cpu_quota=CPU_SHARE_PERCENT * cpus
    )
    return text.encode()


def plan(layout: Layout, desired: bytes, runner: CommandRunner) -> Step:
    step = Step(
        STEP,
        hint=f"check {layout.unit.host.parent} is writable; `systemd-analyze verify "
        f"{layout.unit}` explains a unit systemd rejects",
    )
    path = layout.unit.real
    current = fsops.read_bytes_or_none(path)
    dropins = sorted(p.name for p in layout.dropin_dir.real.glob("*.conf"))
    if dropins:
        step.notes.append(f"local drop-ins kept: {', '.join(dropins)}")
    if current == desired:
        step.ok_detail = f"{layout.unit} is current"
        return step

    def write() -> str:
        path.parent.mkdir(parents=True, exist_ok=True)
        fsops.atomic_write(path, desired, mode=0o644)
        return f"wrote {layout.unit}"

    diff = file_diff(current, desired, f"{layout.unit} (current)", "(new)")
    step.actions.append(Action(f"write {layout.unit}", write, diff=diff))
    if systemd_running(layout):

        def reload() -> str:
            runner.run(["systemctl", "daemon-reload"])
            return "systemctl daemon-reload"

        step.actions.append(Action("systemctl daemon-reload", reload))
    return step
