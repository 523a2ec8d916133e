"""``hal0-lemonade status``: what is installed, and whether every invariant holds.

Each check is a function of one :class:`Inspection` (the host's facts, each read once), so
``doctor`` runs these same functions, in its own order, beside its deeper ones (digests, GPU
access, the port).
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable
from functools import cached_property
from typing import Any

from hal0_lemonade import configschema, cpus, health, opconfig, safefs, statedirs
from hal0_lemonade.checks import Check, Report
from hal0_lemonade.driver import Context
from hal0_lemonade.errors import UsageError
from hal0_lemonade.hostfacts import LISTEN_HOST, Host
from hal0_lemonade.resources import account, daemon_config, preflight, release, service, unit

_ARGS = re.compile(r"--parallel 1 --threads (\d+)(?: (.*))?")
_THREADS = re.compile(r"(?:^|\s)--threads\s+(\d+)(?:\s|$)")
LOOPBACK = {"127.0.0.1", "localhost", "::1"}
INSTALL_HINT = "re-run `hal0-lemonade install` to converge"


class Inspection:
    """What the checks look at, each read at most once per run."""

    def __init__(self, host: Host) -> None:
        self.host = host
        self.layout = host.layout

    @cached_property
    def release(self) -> release.ReleaseState:
        return release.probe(self.layout)

    @cached_property
    def operator(self) -> tuple[opconfig.OperatorConfig, UsageError | None]:
        """The operator's file; a malformed one is a failed check, and the defaults apply."""
        try:
            return self.host.operator, None
        except UsageError as exc:
            return opconfig.none(), exc

    @cached_property
    def port(self) -> int:
        if self.operator[1] is not None:
            return opconfig.DEFAULT_PORT
        return int(self.host.port.value)

    @cached_property
    def config(self) -> daemon_config.ConfigState:
        return daemon_config.probe(self.layout, self.operator[0])

    @cached_property
    def health(self) -> dict[str, Any] | None:
        if self.host.service.get("ActiveState") != "active":
            return None
        return health.get_health(LISTEN_HOST, self.port)


def config_problems(
    config: dict[str, object],
    port: int = opconfig.DEFAULT_PORT,
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
        found = configschema.dig(config, dotted)
        if dotted in operator.values and found != operator.values[dotted]:
            problems.append(
                f"{dotted} is {found!r}, {operator.path} asks {operator.values[dotted]!r}"
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


def release_check(i: Inspection) -> Check:
    rel = i.release
    detail = f"Lemonade {rel.version} at {i.layout.live}" if not rel.problem else rel.problem
    return Check("release", rel.exists and not rel.problem, detail, INSTALL_HINT)


def marker_check(i: Inspection) -> Check:
    rel = i.release
    if rel.version is None:
        return Check("marker", False, f"no {i.layout.marker}: not installed", INSTALL_HINT)
    unverified = "" if rel.verified else " (digest NOT verified)"
    return Check("marker", True, f"{i.layout.marker}: {rel.version}{unverified}")


def operator_check(i: Inspection) -> Check:
    cfg, error = i.operator
    if error is not None:
        return Check("operator", False, error.message, error.hint)
    if not cfg.present:
        return Check("operator", True, f"no {opconfig.PATH}: defaults apply")
    keys = ", ".join(sorted(cfg.values)) or "no keys"
    return Check("operator", True, f"{cfg.path} valid ({keys})")


def state_check(i: Inspection) -> Check:
    """The hal0 tree holds only what belongs there: real directories, a sound config.json.

    Anything else (a symlink, FIFO, hard link, huge file...) is never followed or read, and is
    a failure here: the daemon's account may have planted it.
    """
    problems = statedirs.inspect(
        i.layout,
        account.STATE_DIRS,
        [(daemon_config.STATE_PARTS[0], daemon_config.NAME)],
        account.owner(i.layout),
        cap=daemon_config.MAX_CONFIG_BYTES,
    )
    if problems:
        return Check("state", False, "; ".join(problems), f"{INSTALL_HINT}: {safefs.REPAIR}")
    return Check("state", True, f"{i.layout.home} holds only sound directories and files")


def config_check(i: Inspection) -> Check:
    cfg = i.config
    if cfg.parsed is None:
        return Check(
            "config", False, f"{i.layout.config}: {cfg.problem or 'missing'}", INSTALL_HINT
        )
    live = i.layout.live.real
    schema = preflight.tree_schema(live) if live.is_dir() else None
    problems = config_problems(cfg.parsed, i.port, i.operator[0], schema)
    args = cfg.parsed.get("llamacpp", {}).get("args", "")
    return Check(
        "config", not problems, "; ".join(problems) or f"llamacpp.args {args!r}", INSTALL_HINT
    )


def unit_check(i: Inspection) -> Check:
    desired = unit.render(host=LISTEN_HOST, port=i.port, cpus=cpus.detect().cpus or 2)
    hint = f"{INSTALL_HINT}; put local changes in a drop-in, not in the unit"
    try:
        current = i.layout.unit.real.read_bytes()
    except FileNotFoundError:
        return Check("unit", False, f"{i.layout.unit} is missing", hint)
    same = current == desired
    verdict = "as generated" if same else "differs from the generated unit"
    return Check("unit", same, f"{i.layout.unit} {verdict}", hint)


def _held(i: Inspection, name: str, what: str) -> Check:
    """A service the install was told not to start is not a failure (n/a, and why)."""
    return Check(name, None, f"{what}: installed with --no-start ({i.layout.no_start})")


def enabled_check(i: Inspection) -> Check:
    props = i.host.service
    enabled = (
        props.get("UnitFileState") == "enabled"
        if i.host.systemd
        else i.layout.wants_link.real.is_symlink()
    )
    if not enabled and service.held(i.layout):
        return _held(i, "enabled", "not enabled")
    return Check(
        "enabled",
        enabled,
        "enabled" if enabled else "not enabled",
        "`systemctl enable hal0-lemonade`, or re-run the install without --no-start",
    )


def active_check(i: Inspection) -> Check:
    if i.host.no_systemd:
        return Check("active", None, i.host.no_systemd)
    state = i.host.service.get("ActiveState", "unknown")
    if state != "active" and not i.host.running and service.held(i.layout):
        return _held(i, "active", state)
    detail = f"{state} (MainPID {i.host.main_pid})"
    return Check("active", state == "active", detail, service.JOURNAL_HINT)


def healthy_check(i: Inspection) -> Check:
    if i.host.no_systemd:
        return Check("healthy", None, i.host.no_systemd)
    if not i.host.running and service.held(i.layout):
        return _held(i, "healthy", "not started")
    answer = i.health
    stranger = _stranger_on(i.port, i.host.main_pid) if answer else ""
    if stranger:
        detail = f"{health.HEALTH_PATH} on port {i.port} is answered by {stranger}"
    elif answer is not None:
        # lemond's WebSocket listener (the first free port from 9000, on its host) is the
        # other port it holds: worth seeing when something else wanted 9000.
        ws = answer.get("websocket_port")
        ws_text = f", WebSocket on port {ws}" if isinstance(ws, int) else ""
        detail = f"{health.HEALTH_PATH} answers (lemond {answer.get('version', '?')}{ws_text})"
    else:
        detail = f"{health.HEALTH_PATH} on {LISTEN_HOST}:{i.port} does not answer"
    return Check("healthy", answer is not None and not stranger, detail, service.JOURNAL_HINT)


CheckFn = Callable[[Inspection], Check]
CHECKS: tuple[CheckFn, ...] = (
    release_check,
    marker_check,
    operator_check,
    state_check,
    config_check,
    unit_check,
    enabled_check,
    active_check,
    healthy_check,
)


def run(host: Host, checks: tuple[CheckFn, ...]) -> Report:
    inspection = Inspection(host)
    return Report(inspection.release.version, [check(inspection) for check in checks])


def command(ctx: Context) -> Report:
    return run(ctx.host, CHECKS)
