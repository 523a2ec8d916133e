"""`hal0-lemonade status`: what is installed, and whether every invariant holds."""

from __future__ import annotations

import re
from dataclasses import dataclass

from hal0_lemonade import cpus, health
from hal0_lemonade.layout import Layout
from hal0_lemonade.resources import daemon_config, release, service, unit
from hal0_lemonade.runner import CommandRunner
from hal0_lemonade.settings import LISTEN_HOST, LISTEN_PORT

_THREADS = re.compile(r"(?:^|\s)--threads\s+(\d+)(?:\s|$)")
LOOPBACK = {"127.0.0.1", "localhost", "::1"}


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool | None  # None: does not apply here (e.g. no systemd under --root)
    detail: str


def config_problems(config: dict[str, object], port: int = LISTEN_PORT) -> list[str]:
    problems = []
    llamacpp = config.get("llamacpp")
    args = llamacpp.get("args") if isinstance(llamacpp, dict) else None
    match = _THREADS.search(args) if isinstance(args, str) else None
    if match is None:
        problems.append("llamacpp.args lacks --threads N")
    elif int(match.group(1)) < cpus.MIN_THREADS:
        problems.append(f"llamacpp.args has --threads {match.group(1)} (< {cpus.MIN_THREADS})")
    if config.get("host") not in LOOPBACK:
        problems.append(f"host is {config.get('host')!r}, not loopback")
    if config.get("port") != port:
        problems.append(f"port is {config.get('port')!r}, not {port}")
    return problems


def collect(layout: Layout, runner: CommandRunner) -> tuple[str | None, list[Check]]:
    checks: list[Check] = []
    rel = release.probe(layout)
    checks.append(
        Check(
            "release",
            rel.exists and not rel.problem,
            f"Lemonade {rel.version} at {layout.live}" if not rel.problem else rel.problem,
        )
    )
    checks.append(
        Check(
            "marker",
            rel.version is not None,
            f"{layout.marker}: {rel.version}"
            + ("" if rel.verified or rel.version is None else " (digest NOT verified)"),
        )
    )
    cfg = daemon_config.probe(layout)
    if cfg.parsed is None:
        checks.append(Check("config", False, f"{layout.config}: {cfg.problem or 'missing'}"))
    else:
        problems = config_problems(cfg.parsed)
        args = cfg.parsed.get("llamacpp", {}).get("args", "")
        checks.append(
            Check("config", not problems, "; ".join(problems) or f"llamacpp.args {args!r}")
        )

    budget = cpus.detect()
    desired = unit.render(host=LISTEN_HOST, port=LISTEN_PORT, cpus=budget.cpus or 2)
    try:
        current = layout.unit.real.read_bytes()
        checks.append(
            Check(
                "unit",
                current == desired,
                f"{layout.unit} "
                + ("as generated" if current == desired else "differs from the generated unit"),
            )
        )
    except FileNotFoundError:
        checks.append(Check("unit", False, f"{layout.unit} is missing"))

    state = service.probe(layout, runner, LISTEN_HOST, LISTEN_PORT)
    checks.append(Check("enabled", state.enabled, "enabled" if state.enabled else "not enabled"))
    if not state.systemd:
        why = "no systemd under --root" if not layout.is_host_root else "systemd is not running"
        checks.append(Check("active", None, why))
        checks.append(Check("healthy", None, why))
    else:
        active = state.props.get("ActiveState", "unknown")
        pid = state.props.get("MainPID", "0")
        checks.append(Check("active", active == "active", f"{active} (MainPID {pid})"))
        answer = health.get_health(LISTEN_HOST, LISTEN_PORT) if active == "active" else None
        detail = (
            f"{health.HEALTH_PATH} answers (lemond {answer.get('version', '?')})"
            if answer is not None
            else f"{health.HEALTH_PATH} on {LISTEN_HOST}:{LISTEN_PORT} does not answer"
        )
        checks.append(Check("healthy", answer is not None, detail))
    return rel.version, checks
