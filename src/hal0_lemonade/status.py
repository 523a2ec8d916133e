"""`hal0-lemonade status`: what is installed, and whether every invariant holds.

``doctor`` runs these checks too, and adds the deeper ones (digests, GPU access, the port).
"""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from hal0_lemonade import configschema, cpus, health, opconfig, safefs
from hal0_lemonade.layout import Layout
from hal0_lemonade.resources import account, daemon_config, preflight, release, service, unit
from hal0_lemonade.runner import CommandRunner
from hal0_lemonade.settings import LISTEN_HOST, LISTEN_PORT

_ARGS = re.compile(r"--parallel 1 --threads (\d+)(?: (.*))?")
_THREADS = re.compile(r"(?:^|\s)--threads\s+(\d+)(?:\s|$)")
LOOPBACK = {"127.0.0.1", "localhost", "::1"}
INSTALL_HINT = "re-run `hal0-lemonade install` to converge"


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool | None  # None: does not apply here (e.g. no systemd under --root)
    detail: str
    hint: str = ""  # what to do when ok is False


@dataclass(frozen=True)
class Expected:
    """What the operator asked for, as far as status/doctor can know it (no flags)."""

    port: int
    operator: opconfig.OperatorConfig


def expected(layout: Layout, env: Mapping[str, str] | None = None) -> Expected:
    """The port and the operator file, by environment > file > default (raises UsageError)."""
    operator = opconfig.load(layout)
    env_values = opconfig.from_env(os.environ if env is None else env)
    port = opconfig.resolve_port(env_values, operator)
    return Expected(int(port.value), operator)


def _dig(config: Mapping[str, Any], dotted: str) -> Any:
    node: Any = config
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def config_problems(
    config: dict[str, object],
    port: int = LISTEN_PORT,
    operator: opconfig.OperatorConfig | None = None,
    schema: int | None = None,
) -> list[str]:
    """Invariants of a config.json: --threads N >= 2, loopback, the port, no broadcast in the
    live release's schema (``schema``, when known), the operator's keys."""
    problems = _schema_problems(config, schema) if schema is not None else []
    llamacpp = config.get("llamacpp")
    args = llamacpp.get("args") if isinstance(llamacpp, dict) else None
    match = _THREADS.search(args) if isinstance(args, str) else None
    if match is None:
        problems.append("llamacpp.args lacks --threads N")
    elif int(match.group(1)) < cpus.MIN_THREADS:
        problems.append(f"llamacpp.args has --threads {match.group(1)} (< {cpus.MIN_THREADS})")
    if isinstance(args, str):
        problems += _listener_flags(args)
    if config.get("host") not in LOOPBACK:
        problems.append(f"host is {config.get('host')!r}, not loopback")
    if config.get("port") != port:
        problems.append(f"port is {config.get('port')!r}, not {port}")
    if operator is None:
        return problems
    full = _ARGS.fullmatch(args) if isinstance(args, str) else None
    extra = operator.extra_args()
    if match is not None and (full is None or (full.group(2) or "") != extra):
        want = f"--parallel 1 --threads N{' ' + extra if extra else ''}"
        problems.append(f"llamacpp.args is {args!r}, not {want!r}")
    for dotted in opconfig.DAEMON_KEYS:
        if dotted in operator.values and _dig(config, dotted) != operator.values[dotted]:
            problems.append(
                f"{dotted} is {_dig(config, dotted)!r}, {operator.path} asks "
                f"{operator.values[dotted]!r}"
            )
    return problems


def _schema_problems(config: dict[str, object], schema: int) -> list[str]:
    """A file in another schema than the live release reads is misread by it (10.x finds no
    ``no_broadcast`` in a file 11.x migrated, and broadcasts); the quiet key must hold."""
    written = configschema.file_schema(config)
    if written != schema:
        return [
            f"config.json is in lemond's version-{written} schema, the live release reads "
            f"version {schema} (it ignores the locks it cannot read)"
        ]
    key, value = ("no_broadcast", True) if schema == 1 else ("broadcast", False)
    if config.get(key) is not value:
        return [f"{key} is {config.get(key)!r}: lemond announces itself on the network"]
    return []


def _listener_flags(args: str) -> list[str]:
    """llama-server flags in llamacpp.args that would move its listener off loopback."""
    try:
        tokens = shlex.split(args)
    except ValueError:
        return ["llamacpp.args cannot be split into arguments"]
    for token in tokens:
        name = token.split("=", 1)[0]
        if name in ("--host", "--port"):
            return [f"llamacpp.args sets {name}: llama-server must stay where lemond puts it"]
    return []


def _stranger_on(port: int, main_pid: int) -> str:
    """Who else holds the port, when that is not the service's MainPID ("" when it is, or
    when this user cannot see the holders).  lemond does not exit when its port is taken, so
    "active" plus an answer on the port is not yet "healthy"."""
    from hal0_lemonade import netprobe  # /proc scan: only when something answers

    listeners = netprobe.listeners(port)
    holders = netprobe.holders({lst.inode for lst in listeners}) if listeners else []
    if not holders or any(h.pid == main_pid for h in holders):
        return ""
    named = ", ".join(f"pid {h.pid} ({h.describe()})" for h in holders)
    return f"{named}, not the service (MainPID {main_pid})"


def state_check(layout: Layout) -> Check:
    """The hal0 tree holds only what belongs there: real directories, a sound config.json.

    Anything else (a symlink, FIFO, hard link, huge file...) is never followed or read, and is
    a failure here: the daemon's account may have planted it.
    """
    problems = safefs.inspect(
        layout,
        account.STATE_DIRS,
        [(daemon_config.STATE_PARTS[0], daemon_config.NAME)],
        account.owner(layout),
        cap=daemon_config.MAX_CONFIG_BYTES,
    )
    if problems:
        return Check("state", False, "; ".join(problems), f"{INSTALL_HINT}: {safefs.REPAIR}")
    return Check("state", True, f"{layout.home} holds only sound directories and files")


def collect(
    layout: Layout, runner: CommandRunner, want: Expected | None = None
) -> tuple[str | None, list[Check]]:
    want = want if want is not None else expected(layout)
    port = want.port
    checks: list[Check] = []
    rel = release.probe(layout)
    checks.append(
        Check(
            "release",
            rel.exists and not rel.problem,
            f"Lemonade {rel.version} at {layout.live}" if not rel.problem else rel.problem,
            INSTALL_HINT,
        )
    )
    checks.append(
        Check(
            "marker",
            rel.version is not None,
            f"{layout.marker}: {rel.version}"
            + ("" if rel.verified or rel.version is None else " (digest NOT verified)"),
            INSTALL_HINT,
        )
    )
    checks.append(state_check(layout))
    cfg = daemon_config.probe(layout, want.operator)
    if cfg.parsed is None:
        checks.append(
            Check("config", False, f"{layout.config}: {cfg.problem or 'missing'}", INSTALL_HINT)
        )
    else:
        live = layout.live.real
        schema = preflight.tree_schema(live) if live.is_dir() else None
        problems = config_problems(cfg.parsed, port, want.operator, schema)
        args = cfg.parsed.get("llamacpp", {}).get("args", "")
        checks.append(
            Check(
                "config",
                not problems,
                "; ".join(problems) or f"llamacpp.args {args!r}",
                INSTALL_HINT,
            )
        )

    budget = cpus.detect()
    desired = unit.render(host=LISTEN_HOST, port=port, cpus=budget.cpus or 2)
    unit_hint = f"{INSTALL_HINT}; put local changes in a drop-in, not in the unit"
    try:
        current = layout.unit.real.read_bytes()
        checks.append(
            Check(
                "unit",
                current == desired,
                f"{layout.unit} "
                + ("as generated" if current == desired else "differs from the generated unit"),
                unit_hint,
            )
        )
    except FileNotFoundError:
        checks.append(Check("unit", False, f"{layout.unit} is missing", unit_hint))

    state = service.probe(layout, runner, LISTEN_HOST, port)
    checks.append(
        Check(
            "enabled",
            state.enabled,
            "enabled" if state.enabled else "not enabled",
            "`systemctl enable hal0-lemonade`, or re-run the install without --no-start",
        )
    )
    if not state.systemd:
        why = "no systemd under --root" if not layout.is_host_root else "systemd is not running"
        checks.append(Check("active", None, why))
        checks.append(Check("healthy", None, why))
    else:
        active = state.props.get("ActiveState", "unknown")
        pid = state.props.get("MainPID", "0")
        checks.append(
            Check("active", active == "active", f"{active} (MainPID {pid})", service.JOURNAL_HINT)
        )
        answer = health.get_health(LISTEN_HOST, port) if active == "active" else None
        stranger = _stranger_on(port, int(pid) if pid.isdigit() else 0) if answer else ""
        if stranger:
            detail = f"{health.HEALTH_PATH} on port {port} is answered by {stranger}"
        elif answer is not None:
            # lemond's WebSocket listener (the first free port from 9000, on its host) is the
            # other port it holds: worth seeing when something else wanted 9000.
            ws = answer.get("websocket_port")
            ws_text = f", WebSocket on port {ws}" if isinstance(ws, int) else ""
            detail = f"{health.HEALTH_PATH} answers (lemond {answer.get('version', '?')}{ws_text})"
        else:
            detail = f"{health.HEALTH_PATH} on {LISTEN_HOST}:{port} does not answer"
        healthy = answer is not None and not stranger
        checks.append(Check("healthy", healthy, detail, service.JOURNAL_HINT))
    return rel.version, checks
