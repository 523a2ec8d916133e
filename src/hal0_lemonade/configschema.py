"""lemond's config.json schemas, and hal0's locked intent rendered in each.

Lemonade 10.x reads ``config_version`` 1.  11.x migrates any file below version 2 in place at
start (``no_broadcast`` becomes ``broadcast``, a ``ctx_size`` of exactly 4096 becomes -1, and the
whole of its defaults is merged in), and leaves a version-2 file without ``no_broadcast`` byte
for byte alone; 10.x started on a migrated file ignores ``broadcast`` and broadcasts.  So hal0
renders its intent in the schema of the release it installs: 11.x finds nothing to migrate
(a converged host stays converged, no restart), and no file lemond migrated is ever rewritten
down to version 1 (a rollback restores the file that release ran with, kept beside it).

Which schema a release speaks is what its own ``resources/defaults.json`` says; every key the
intent locks must be one of that file's keys, so a release that renamed one is refused before
it goes live rather than run with the lock silently gone.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from typing import Any

SCHEMAS = (1, 2)
# lemond's own file is ~1-3 kB (37 keys in 11.x).  Anything bigger is not read: hal0 owns the
# file, and a 400 MB sparse file or a FIFO must not cost root memory or hang it.
MAX_CONFIG_BYTES = 1 << 20
# The key that keeps lemond from announcing itself on the network, per schema, and its value.
_QUIET = {1: ("no_broadcast", True), 2: ("broadcast", False)}


def llamacpp_args(threads: int) -> str:
    # Never omitted, whatever else changes (operator extras come after it): with two or more
    # llama-server children each spawning a thread per core, Vulkan dispatch starves.
    return f"--parallel 1 --threads {threads}"


def locked(*, threads: int, host: str, port: int, models_dir: str, schema: int) -> dict[str, Any]:
    """The keys hal0 locks, in ``schema``, in the order a fresh file shows them."""
    quiet_key, quiet_value = _QUIET[schema]
    return {
        "config_version": schema,
        "host": host,
        "port": port,
        "ctx_size": 4096,
        "max_loaded_models": 4,
        "extra_models_dir": models_dir,
        "global_timeout": 900,
        quiet_key: quiet_value,
        "log_level": "info",
        "rocm_channel": "stable",
        "llamacpp": {"args": llamacpp_args(threads), "backend": "rocm", "prefer_system": False},
        "flm": {"args": "--asr 1 --embed 1"},
        "kokoro": {"cpu_bin": "builtin"},
        "whispercpp": {"backend": "vulkan"},
        "sdcpp": {"backend": "rocm", "steps": 20, "cfg_scale": 7.0, "width": 512, "height": 512},
    }


def predicted(version: str) -> int:
    """The schema of a release not on disk yet (a dry run before the download): 11.x and
    later speak version 2.  The release's own defaults.json decides once it is extracted."""
    major = version.split(".", 1)[0]
    return 2 if major.isdigit() and int(major) >= 11 else 1


def schema_of(defaults: Mapping[str, Any]) -> int | None:
    """The schema a release's defaults.json declares; None when it is not one hal0 knows."""
    value = defaults.get("config_version")
    return value if value in SCHEMAS and not isinstance(value, bool) else None


def missing_keys(defaults: Mapping[str, Any], schema: int) -> list[str]:
    """Dotted keys hal0 locks that the release's defaults.json does not have."""
    sample = locked(threads=2, host="", port=0, models_dir="", schema=schema)
    return [key for key in _dotted(sample) if not _has(defaults, key)]


def _dotted(doc: Mapping[str, Any], prefix: str = "") -> list[str]:
    keys: list[str] = []
    for key, value in doc.items():
        if isinstance(value, Mapping):
            keys += _dotted(value, f"{prefix}{key}.")
        else:
            keys.append(f"{prefix}{key}")
    return keys


_ABSENT = object()


def dig(doc: Mapping[str, Any], dotted: str, default: Any = None) -> Any:
    """The value at a dotted key ("llamacpp.args"), or ``default`` where any part is absent."""
    node: Any = doc
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return default
        node = node[part]
    return node


def _has(doc: Mapping[str, Any], dotted: str) -> bool:
    return dig(doc, dotted, _ABSENT) is not _ABSENT


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


def file_schema(config: Mapping[str, Any]) -> int:
    """The schema a config.json is written in (a file without a version is version 1)."""
    value = config.get("config_version", 1)
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 1


def translate(config: Mapping[str, Any], schema: int) -> dict[str, Any] | None:
    """``config`` in ``schema``, as lemond itself would migrate it; None for a downgrade
    (hal0 never rewrites a migrated file down: see the module docstring)."""
    current = file_schema(config)
    if current > schema:
        return None
    out = copy.deepcopy(dict(config))
    if current < 2 <= schema:
        # 11.x's own rule: broadcast = not no_broadcast, unless broadcast is already there.
        quiet = out.pop("no_broadcast", None)
        if isinstance(quiet, bool) and "broadcast" not in out:
            out["broadcast"] = not quiet
        out["config_version"] = schema
    return out
