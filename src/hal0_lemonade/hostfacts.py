"""What the commands ask about the host, worked out once per run.

Is systemd PID 1 of the root we act on (and if not, why not), what state is the service in,
what does the operator's file say, which port does lemond listen on.  Every command asks
these the same way here instead of each working them out again.
"""

from __future__ import annotations

from functools import cached_property

from hal0_lemonade import opconfig
from hal0_lemonade.environment import Environment
from hal0_lemonade.layout import SERVICE_NAME, Layout
from hal0_lemonade.runner import CommandRunner

LISTEN_HOST = "127.0.0.1"  # loopback only, never exposed off the box
# States in which the service's process is (still) there: stopping it is not a no-op.
RUNNING_STATES = frozenset({"active", "activating", "reloading", "deactivating"})
SHOW_PROPERTIES = (
    "LoadState",
    "ActiveState",
    "SubState",
    "UnitFileState",
    "MainPID",
    "NRestarts",
    "ExecMainStatus",
)


def parse_show(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


def show(runner: CommandRunner) -> dict[str, str]:
    """``systemctl show`` of the service: the properties above."""
    argv = ["systemctl", "show", *(f"--property={p}" for p in SHOW_PROPERTIES), SERVICE_NAME]
    return parse_show(runner.run(argv, check=False).stdout)


def systemd_running(layout: Layout) -> bool:
    """sd_booted(): is systemd PID 1 of the root we act on?  Never under a sandbox root."""
    return layout.is_host_root and layout.at("/run/systemd/system").real.is_dir()


def no_systemd_reason(layout: Layout) -> str:
    """Why the service cannot be asked or started here ("" when it can)."""
    if not layout.is_host_root:
        return f"no systemd runs under --root {layout.root}"
    if not systemd_running(layout):
        return "systemd is not running on this host (PID 1 is not systemd)"
    return ""


class Host:
    """The facts of one run on one root (each worked out at most once)."""

    def __init__(self, layout: Layout, runner: CommandRunner, env: Environment) -> None:
        self.layout = layout
        self.runner = runner
        self.env = env

    @cached_property
    def no_systemd(self) -> str:
        return no_systemd_reason(self.layout)

    @property
    def systemd(self) -> bool:
        return not self.no_systemd

    @cached_property
    def service(self) -> dict[str, str]:
        """The service's properties; empty where no systemd can be asked."""
        return show(self.runner) if self.systemd else {}

    @property
    def running(self) -> bool:
        props = self.service
        return props.get("ActiveState") in RUNNING_STATES or props.get("SubState") == (
            "auto-restart"
        )

    @property
    def main_pid(self) -> int:
        pid = self.service.get("MainPID", "0")
        return int(pid) if pid.isdigit() else 0

    @cached_property
    def operator(self) -> opconfig.OperatorConfig:
        """The operator's /etc/hal0/lemonade.toml (UsageError when it is malformed)."""
        return opconfig.load(self.layout)

    @cached_property
    def port(self) -> opconfig.Resolved:
        """lemond's port: HAL0_LEMONADE_PORT > the operator's file > 13305."""
        return opconfig.resolve_port(self.env.overrides, self.operator)
