"""``hal0-lemonade config show``: the config.json keys an install enforces, and where each
value comes from (locked baseline, default, the operator file, the environment)."""

from __future__ import annotations

from typing import Any, NamedTuple

from hal0_lemonade import configschema, cpus, opconfig, releases, settings
from hal0_lemonade.driver import Context
from hal0_lemonade.hostfacts import Host
from hal0_lemonade.render import Listing, json_value
from hal0_lemonade.resources import daemon_config, preflight


class Entry(NamedTuple):
    key: str  # dotted config.json key
    value: Any
    source: str


def effective(host: Host, budget: cpus.CpuBudget) -> list[Entry]:
    """What ``install`` (without flags) would enforce in config.json, key by key."""
    operator = host.operator
    intent, threads_source = settings.intent_for(host, budget)
    # The schema of the live release (11.x: version 2, ``broadcast``), else the pinned one's.
    live = host.layout.live.real
    schema = (
        preflight.tree_schema(live)
        if live.is_dir()
        else configschema.predicted(str(releases.load_manifest()["default"]))
    )
    desired = daemon_config.with_operator(intent.locked(schema), operator)
    where = str(operator.path or opconfig.PATH)
    entries = []
    for key, value in opconfig.flatten(desired).items():
        if key == "port" and host.port.source != "default":
            source = host.port.source
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
    return entries


def command(ctx: Context) -> Listing:
    entries = effective(ctx.host, cpus.detect())
    operator = ctx.host.operator
    path = str(operator.path or opconfig.PATH)
    state = "present" if operator.present else "absent: defaults apply"
    return Listing(
        rows=[(e.key, json_value(e.value), e.source) for e in entries],
        document={
            "ok": True,
            "operator_file": path,
            "present": operator.present,
            "values": {e.key: {"value": e.value, "source": e.source} for e in entries},
        },
        heading=f"operator file: {path} ({state})",
    )
