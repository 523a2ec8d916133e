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
import re
from dataclasses import dataclass
from typing import Any, NamedTuple

from hal0_lemonade import configschema, opconfig, safefs
from hal0_lemonade import cpus as cpu_probe
from hal0_lemonade.layout import Layout
from hal0_lemonade.plan import Action, Step, file_diff
from hal0_lemonade.resources import account, config_history, preflight

STEP = "Daemon config"
BACKUP_SUFFIX = ".bak"


llamacpp_args = configschema.llamacpp_args
_THREADS = re.compile(r"--parallel 1 --threads (\d+)(?: |$)")


class Intent(NamedTuple):
    """What hal0 locks in config.json, before it is written in a release's schema."""

    threads: int
    host: str
    port: int
    models_dir: str

    def as_ran_with(self, config: dict[str, Any] | None) -> Intent:
        """This intent with the thread count and port ``config`` (one a release ran with)
        records, where they are sound: a rollback brings a release back as it ran, flags
        included, which a command without them could not know otherwise."""
        if config is None:
            return self
        threads, port = self.threads, self.port
        llamacpp = config.get("llamacpp")
        args = llamacpp.get("args") if isinstance(llamacpp, dict) else None
        found = _THREADS.match(args) if isinstance(args, str) else None
        if found is not None and int(found.group(1)) >= cpu_probe.MIN_THREADS:
            threads = int(found.group(1))
        kept_port = config.get("port")
        if isinstance(kept_port, int) and not isinstance(kept_port, bool):
            port = kept_port if 1024 <= kept_port <= 65535 else port
        return Intent(threads, self.host, port, self.models_dir)

    def locked(self, schema: int) -> dict[str, Any]:
        return configschema.locked(
            threads=self.threads,
            host=self.host,
            port=self.port,
            models_dir=self.models_dir,
            schema=schema,
        )


def baseline(
    *, threads: int, host: str, port: int, models_dir: str, schema: int = 1
) -> dict[str, Any]:
    """The keys hal0 locks, in ``schema`` (see :mod:`hal0_lemonade.configschema`)."""
    return Intent(threads, host, port, models_dir).locked(schema)


@dataclass
class Target:
    """The release config.json is written for, as the release step knows it.

    At plan time the schema may be a prediction (a release not downloaded yet); the release
    step sets the real one from the release's defaults.json before this step applies, and,
    when it switches releases, ``kept``: the config the incoming release last ran with.
    """

    schema: int
    kept: dict[str, Any] | None = None
    switching: bool = False


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


MAX_CONFIG_BYTES = configschema.MAX_CONFIG_BYTES
STATE_PARTS = ("lemonade",)  # config.json's directory, relative to /var/lib/hal0
NAME = "config.json"


class ConfigState(NamedTuple):
    raw: bytes | None  # None: missing, or not read (see ``problem``)
    parsed: dict[str, Any] | None  # None: missing, unreadable or not a JSON object
    problem: str  # why ``parsed`` is None although something is there
    mode: int | None
    uid: int | None
    operator: opconfig.OperatorConfig = opconfig.none()
    unsafe: bool = False  # not a sound file (symlink, FIFO, too big...): moved aside, not read


parse = configschema.parse


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


def desired(
    state: ConfigState, intent: Intent, target: Target
) -> tuple[dict[str, Any], config_history.Base]:
    """config.json as it should be for ``target``: its base with the locked keys over it."""
    base = config_history.base_for(state.parsed, target.schema, target.kept)
    return merge(base.config, with_operator(intent.locked(target.schema), state.operator)), base


def plan(layout: Layout, intent: Intent, state: ConfigState, target: Target) -> Step:
    step = Step(
        STEP,
        hint=f"check that {layout.config.host.parent} exists and is writable by root; "
        "config.json must be valid JSON (a broken one is backed up and replaced)",
    )
    wanted, base = desired(state, intent, target)
    threads = wanted["llamacpp"]["args"]
    if state.parsed is not None and state.parsed == wanted:
        uid, _gid = account.owner_ids(layout)
        if state.mode != 0o644 or uid not in (-1, state.uid):

            def fix_owner() -> str:
                _write(layout, NAME, state.raw or b"", 0o644)
                return f"set {layout.config} to mode 0644, owner hal0"

            step.actions.append(Action(f"set {layout.config} to mode 0644, owner hal0", fix_owner))
        step.ok_detail = f"baseline holds (llamacpp.args {threads!r})"
        return step

    data = render(wanted)
    # Diff parsed content, so that lemond's own formatting of the file is not shown as change.
    shown = render(state.parsed) if state.parsed is not None else state.raw
    if state.unsafe:
        step.notes.append(f"{state.problem}; install moves it aside and writes a new one")
    elif state.problem:
        step.notes.append(f"current {layout.config} is {state.problem}; it will be replaced")
    if base.note:
        step.notes.append(base.note)

    def write() -> str:
        # The release step has run: the schema is now the live release's own, and a switch
        # of releases has brought back the config the incoming one ran with.
        return converge(layout, state, intent, target)

    step.actions.append(
        Action(f"write {layout.config}", write, diff=_diff(shown, data, str(layout.config)))
    )
    return step


def converge(layout: Layout, state: ConfigState, intent: Intent, target: Target) -> str:
    """Write what :func:`desired` says, over ``state`` (kept as config.json.bak)."""
    final, base = desired(state, intent, target)
    args = final["llamacpp"]["args"]
    if state.parsed is not None and state.parsed == final:
        return f"baseline holds (llamacpp.args {args!r})"
    notes: list[str] = [base.note] if base.note else []
    if state.raw is not None:
        notes += _write(layout, NAME + BACKUP_SUFFIX, state.raw, 0o640)
    notes += _write(layout, NAME, render(final), 0o644, aside=state.unsafe)
    verb = "wrote" if state.raw is None else "updated"
    return "; ".join([*notes, f"{verb} {layout.config} (llamacpp.args {args!r})"])


def for_release(layout: Layout, release_id: str, *, switching: bool) -> Target:
    """The target for a release tree on disk (a rollback's): its schema, and the config it
    last ran with when this run switches to it."""
    tree = layout.releases.real / release_id
    kept = config_history.load(layout, release_id) if switching else None
    return Target(preflight.tree_schema(tree), kept, switching)


def _write(layout: Layout, name: str, data: bytes, mode: int, *, aside: bool = False) -> list[str]:
    """Through the state dir's fd (hal0 owns it): see :mod:`hal0_lemonade.safefs`."""
    return safefs.write_file(
        layout, STATE_PARTS, name, data, mode=mode, owner=account.owner(layout), aside=aside
    )
