"""lemond's config.json: the locked baseline enforced, everything else kept.

lemond rewrites this file itself at run time (``POST /internal/set``), so the installer
merges instead of overwriting: keys the baseline locks are enforced, all others survive.  The
file is rewritten only when its parsed content differs, so lemond's own formatting of an
equivalent file causes no churn.

The operator's ``/etc/hal0/lemonade.toml`` (see :mod:`hal0_lemonade.opconfig`) is read by the
probe: the keys it sets are laid over the baseline and then enforced like it, and its
``llamacpp.extra_args`` are appended after ``--parallel 1 --threads N``.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from typing import Any

from hal0_lemonade import opconfig, safefs
from hal0_lemonade.layout import Layout
from hal0_lemonade.plan import Action, Step, file_diff
from hal0_lemonade.resources import account

STEP = "Daemon config"
BACKUP_SUFFIX = ".bak"


def llamacpp_args(threads: int) -> str:
    # ADR-0008 §4: never omitted, whatever else changes (operator extras come after it).
    return f"--parallel 1 --threads {threads}"


def baseline(*, threads: int, host: str, port: int, models_dir: str) -> dict[str, Any]:
    """The keys lemonade-adoption-plan §3 locks, in the order a fresh file shows them."""
    return {
        "config_version": 1,
        "host": host,
        "port": port,
        "ctx_size": 4096,
        "max_loaded_models": 4,
        "extra_models_dir": models_dir,
        "global_timeout": 900,
        "no_broadcast": True,
        "log_level": "info",
        "rocm_channel": "stable",
        "llamacpp": {"args": llamacpp_args(threads), "backend": "rocm", "prefer_system": False},
        "flm": {"args": "--asr 1 --embed 1"},
        "kokoro": {"cpu_bin": "builtin"},
        "whispercpp": {"backend": "vulkan"},
        "sdcpp": {"backend": "rocm", "steps": 20, "cfg_scale": 7.0, "width": 512, "height": 512},
    }


def merge(current: dict[str, Any], locked: dict[str, Any]) -> dict[str, Any]:
    """``current`` with every locked key enforced (recursively for nested objects)."""
    merged = copy.deepcopy(current)
    for key, value in locked.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def with_operator(locked: dict[str, Any], operator: opconfig.OperatorConfig) -> dict[str, Any]:
    """The baseline with the operator's keys laid over it and extra llama.cpp args appended."""
    desired = merge(locked, opconfig.daemon_overrides(operator))
    extra = operator.extra_args()
    if extra:
        desired["llamacpp"]["args"] = f"{desired['llamacpp']['args']} {extra}"
    return desired


# lemond's own file is ~1-3 kB (37 keys in 11.x).  Anything bigger is not read: hal0 owns the
# file, and a 400 MB sparse file or a FIFO must not cost root memory or hang it.
MAX_CONFIG_BYTES = 1 << 20
STATE_PARTS = ("lemonade",)  # config.json's directory, relative to /var/lib/hal0
NAME = "config.json"


@dataclass(frozen=True)
class ConfigState:
    raw: bytes | None  # None: missing, or not read (see ``problem``)
    parsed: dict[str, Any] | None  # None: missing, unreadable or not a JSON object
    problem: str  # why ``parsed`` is None although something is there
    mode: int | None
    uid: int | None
    operator: opconfig.OperatorConfig = field(default_factory=opconfig.none)
    unsafe: bool = False  # not a sound file (symlink, FIFO, too big...): moved aside, not read


def parse(raw: bytes) -> tuple[dict[str, Any] | None, str]:
    """config.json's bytes as a JSON object, or why not (never raises on hostile bytes)."""
    try:
        parsed = json.loads(raw)
    except RecursionError:
        return None, "not valid JSON (nested too deeply)"
    except ValueError:
        return None, "not valid JSON"
    if not isinstance(parsed, dict):
        return None, "not a JSON object"
    return parsed, ""


def probe(layout: Layout, operator: opconfig.OperatorConfig | None = None) -> ConfigState:
    operator = opconfig.load(layout) if operator is None else operator
    found = safefs.read_file(layout, STATE_PARTS, NAME, account.owner(layout), cap=MAX_CONFIG_BYTES)
    if found.raw is None:
        return ConfigState(
            None, None, found.problem, found.mode, found.uid, operator, unsafe=found.unsafe
        )
    parsed, problem = parse(found.raw)
    return ConfigState(found.raw, parsed, problem, found.mode, found.uid, operator)


def render(config: dict[str, Any]) -> bytes:
    return (json.dumps(config, indent=2) + "\n").encode()


def _diff(old: bytes | None, new: bytes, name: str) -> str:
    return file_diff(old, new, f"{name} (current)", f"{name} (new)")


def plan(layout: Layout, locked: dict[str, Any], state: ConfigState) -> Step:
    step = Step(
        STEP,
        hint=f"check that {layout.config.host.parent} exists and is writable by root; "
        "config.json must be valid JSON (a broken one is backed up and replaced)",
    )
    locked = with_operator(locked, state.operator)
    desired = merge(state.parsed or {}, locked)
    threads = locked["llamacpp"]["args"]
    if state.parsed is not None and state.parsed == desired:
        uid, _gid = account.owner_ids(layout)
        if state.mode != 0o644 or uid not in (-1, state.uid):

            def fix_owner() -> str:
                _write(layout, NAME, state.raw or b"", 0o644)
                return f"set {layout.config} to mode 0644, owner hal0"

            step.actions.append(Action(f"set {layout.config} to mode 0644, owner hal0", fix_owner))
        step.ok_detail = f"baseline holds (llamacpp.args {threads!r})"
        return step

    data = render(desired)
    # Diff parsed content, so that lemond's own formatting of the file is not shown as change.
    shown = render(state.parsed) if state.parsed is not None else state.raw
    if state.unsafe:
        step.notes.append(f"{state.problem}; install moves it aside and writes a new one")
    elif state.problem:
        step.notes.append(f"current {layout.config} is {state.problem}; it will be replaced")

    def write() -> str:
        notes: list[str] = []
        if state.raw is not None:
            notes += _write(layout, NAME + BACKUP_SUFFIX, state.raw, 0o640)
        notes += _write(layout, NAME, data, 0o644, aside=state.unsafe)
        verb = "wrote" if state.raw is None else "updated"
        return "; ".join([*notes, f"{verb} {layout.config} (llamacpp.args {threads!r})"])

    step.actions.append(
        Action(f"write {layout.config}", write, diff=_diff(shown, data, str(layout.config)))
    )
    return step


def _write(layout: Layout, name: str, data: bytes, mode: int, *, aside: bool = False) -> list[str]:
    """Through the state dir's fd (hal0 owns it): see :mod:`hal0_lemonade.safefs`."""
    return safefs.write_file(
        layout, STATE_PARTS, name, data, mode=mode, owner=account.owner(layout), aside=aside
    )
