"""`hal0-lemonade config show`: the config.json keys an install enforces, and where each
value comes from (locked baseline, default, the operator file, the environment)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from hal0_lemonade import configschema, cpus, opconfig, releases, report, settings
from hal0_lemonade.clikit import EXIT_OK, guard, json_option, root_option
from hal0_lemonade.layout import Layout
from hal0_lemonade.resources import daemon_config, preflight


@dataclass(frozen=True)
class Entry:
    key: str  # dotted config.json key
    value: Any
    source: str


def _flatten(doc: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in doc.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def effective(
    layout: Layout, env: Mapping[str, str], budget: cpus.CpuBudget
) -> tuple[opconfig.OperatorConfig, list[Entry]]:
    """What ``install`` (without flags) would enforce in config.json, key by key."""
    intent, operator, threads_source, port_source = settings.intent_for(layout, env, budget)
    # The schema of the live release (11.x: version 2, ``broadcast``), else the pinned one's.
    live = layout.live.real
    schema = (
        preflight.tree_schema(live)
        if live.is_dir()
        else configschema.predicted(str(releases.load_manifest()["default"]))
    )
    desired = daemon_config.with_operator(intent.locked(schema), operator)
    where = str(operator.path or opconfig.PATH)
    entries = []
    for key, value in _flatten(desired).items():
        if key == "port" and port_source != "default":
            source = port_source
        elif key == "llamacpp.args":
            source = f"--parallel 1 fixed; --threads from {threads_source}"
            if operator.extra_args():
                source += f"; extra_args from {where}"
        elif key in operator.values:
            source = where
        elif key in opconfig.KEYS:
            source = f"default (set it in {where})"
        else:
            source = "locked by hal0"
        entries.append(Entry(key, value, source))
    return operator, entries


EXAMPLES = f"""
\b
Examples:
  hal0-lemonade config show                 # what install would enforce, and why
  hal0-lemonade config show --json
  HAL0_LEMONADE_PORT=13400 hal0-lemonade config show

\b
Operator file ({opconfig.PATH}, optional):
  port = 13305
  threads = 6
  max_loaded_models = 2
  [llamacpp]
  backend = "vulkan"
  extra_args = "--no-mmap"
"""


@click.group("config")
def group() -> None:
    """Show the effective configuration (operator file: /etc/hal0/lemonade.toml)."""


@group.command("show", epilog=EXAMPLES)
@root_option("Read this directory's /etc/hal0/lemonade.toml as if it were /.")
@json_option()
def show(root: Path, as_json: bool) -> int:
    """Print the config.json values install enforces and where each comes from."""

    def body() -> int:
        operator, entries = effective(Layout(root), os.environ, cpus.detect())
        path = str(operator.path or opconfig.PATH)
        if as_json:
            report.dump_json(
                {
                    "ok": True,
                    "operator_file": path,
                    "present": operator.present,
                    "values": {e.key: {"value": e.value, "source": e.source} for e in entries},
                }
            )
            return EXIT_OK
        state = "present" if operator.present else "absent: defaults apply"
        click.echo(f"operator file: {path} ({state})")
        width = max(len(e.key) for e in entries)
        shown = [(e, report.json_value(e.value)) for e in entries]
        vwidth = min(40, max(len(v) for _, v in shown))
        for entry, value in shown:
            click.echo(f"{entry.key:<{width}}  {value:<{vwidth}}  {entry.source}")
        return EXIT_OK

    return guard(as_json, False, body)
