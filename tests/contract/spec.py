"""Lemonade's contract as measured on the real 10.6.0 and 11.7.0 daemons, as data.

The tests compare both the real daemons and the stand-in against these; where a value was
measured rather than read from upstream, the comment says how.
"""

from __future__ import annotations

import copy
import json
from typing import Any

MODEL_TYPES_10 = ("embedding", "image", "llm", "reranking", "transcription", "tts")
MODEL_TYPES_11 = ("classification", *MODEL_TYPES_10)

HEALTH_KEYS_10 = frozenset(
    {"all_models_loaded", "max_models", "model_loaded", "status", "version", "websocket_port"}
)
HEALTH_KEYS_11 = HEALTH_KEYS_10 | {
    "pinned_helper_models",
    "pinned_models",
    "telemetry",
    "update_check_done",
}

# What the stand-in adds for tests; the real daemon has none of it.
STANDIN_HEALTH_EXTRAS = frozenset({"pid", "uid", "llamacpp_args", "config"})
STANDIN_FILES = frozenset({"fake-lemond.state.json", "shutdown-requests.log", "signals.log"})

DEFAULT_PORT = 13305
WEBSOCKET_FIRST_PORT = 9000
BEACON_PORT = 13305
TMP_LOG = "/tmp/lemonade-server.log"  # noqa: S108 - 10.x's fixed fallback, not ours


def model_types(major: int) -> tuple[str, ...]:
    return MODEL_TYPES_11 if major >= 11 else MODEL_TYPES_10


def health_keys(major: int) -> frozenset[str]:
    return HEALTH_KEYS_11 if major >= 11 else HEALTH_KEYS_10


def dump_config(config: object) -> str:
    """config.json as lemond writes it (nlohmann dump(2): sorted keys, raw UTF-8, newline)."""
    return json.dumps(config, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def migrated_11(
    config: dict[str, Any], defaults: dict[str, Any]
) -> tuple[dict[str, Any] | None, list[str]]:
    """What 11.7.0 leaves in config.json at start, and the migration lines it logs.

    None: the file is not touched at all (same bytes, inode and mtime).  Measured rules:
    - ``no_broadcast`` is dropped at any config_version; ``broadcast`` becomes its negation
      unless the file already has a ``broadcast`` (which then wins).
    - Below config_version 2 (or without one, or 0): config_version becomes 2, and an integer
      ``ctx_size`` of exactly 4096 (10.x's default) becomes -1; 4096.0, "4096", 8192 stay.
      At config_version 2 or more, ctx_size is left alone.
    - Either change rewrites the file with 11.7.0's defaults.json deep-merged under it: every
      other key and value is kept (unknown keys, nested unknown keys, and old defaults such
      as global_timeout 300 alike), missing ones are added, including "_generated".
    - A file at config_version >= 2 without no_broadcast is left as it is, however few keys
      it has and however it is formatted.
    """
    result = copy.deepcopy(config)
    notes: list[str] = []
    changed = False
    if "no_broadcast" in result:
        no_broadcast = result.pop("no_broadcast")
        result.setdefault("broadcast", not no_broadcast)
        old, new = json.dumps(no_broadcast), json.dumps(result["broadcast"])
        notes.append(f"Migrating config: no_broadcast={old} -> broadcast={new}")
        changed = True
    version = result.get("config_version")
    if not isinstance(version, int) or version < 2:
        ctx = result.get("ctx_size")
        if type(ctx) is int and ctx == 4096:
            result["ctx_size"] = -1
            notes.append("Migrating config: ctx_size 4096 -> -1 (auto-tune enabled)")
        result["config_version"] = 2
        changed = True
    return (deep_merge(defaults, result) if changed else None), notes
