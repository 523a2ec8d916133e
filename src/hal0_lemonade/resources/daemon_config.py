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

from hal0_lemonade import fsops, opconfig
from hal0_lemonade.layout import Layout
from hal0_lemonade.plan import Action, Step, file_diff
from hal0_lemonade.resources.account import owner_ids

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


@dataclass(frozen=True)
class ConfigState:
    raw: bytes | None  # None: missing
    parsed: dict[str, Any] | None  # None: missing, unreadable or not a JSON object
    problem: str  # why ``parsed`` is None although the file exists
    mode: int | None
    uid: int | None
    operator: opconfig.OperatorConfig = field(default_factory=opconfig.none)


def probe(layout: Layout, operator: opconfig.OperatorConfig | None = None) -> ConfigState:
    operator = opconfig.load(layout) if operator is None else operator
    path = layout.config.real
    try:
        raw = path.read_bytes()
        st = path.stat()
    except FileNotFoundError:
        return ConfigState(None, None, "", None, None, operator)
    except PermissionError:
        return ConfigState(None, None, "not readable (run as root)", None, None, operator)
    mode = st.st_mode & 0o7777
    try:
        parsed = json.loads(raw)
    except ValueError:
        return ConfigState(raw, None, "not valid JSON", mode, st.st_uid, operator)
    if not isinstance(parsed, dict):
        return ConfigState(raw, None, "not a JSON object", mode, st.st_uid, operator)
    return ConfigState(raw, parsed, "", mode, st.st_uid, operator)


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
    path = layout.config.real
    threads = locked["llamacpp"]["args"]
    if state.parsed is not None and state.parsed == desired:
        uid, _gid = owner_ids(layout)
        if state.mode != 0o644 or uid not in (-1, state.uid):

            def fix_owner() -> None:
                fsops.atomic_write(path, state.raw or b"", mode=0o644, uid=uid, gid=_gid)

            step.actions.append(Action(f"set {layout.config} to mode 0644, owner hal0", fix_owner))
        step.ok_detail = f"baseline holds (llamacpp.args {threads!r})"
        return step

    data = render(desired)
    # Diff parsed content, so that lemond's own formatting of the file is not shown as change.
    shown = render(state.parsed) if state.parsed is not None else state.raw
    if state.problem:
        step.notes.append(f"current {layout.config} is {state.problem}; it will be replaced")

    def write() -> str:
        uid, gid = owner_ids(layout)
        if state.raw is not None:
            backup = path.with_name(path.name + BACKUP_SUFFIX)
            fsops.atomic_write(backup, state.raw, mode=0o640, uid=uid, gid=gid)
        fsops.atomic_write(path, data, mode=0o644, uid=uid, gid=gid)
        verb = "wrote" if state.raw is None else "updated"
        return f"{verb} {layout.config} (llamacpp.args {threads!r})"

    step.actions.append(
        Action(f"write {layout.config}", write, diff=_diff(shown, data, str(layout.config)))
    )
    return step
