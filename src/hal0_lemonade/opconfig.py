"""The operator's own settings: ``/etc/hal0/lemonade.toml`` (optional), validated by name.

hal0 locks lemond's baseline (loopback host, ``--parallel 1 --threads N``, the models dir...).
The operator may change what that baseline does not need to lock: the port, the thread count,
``max_loaded_models``, ``ctx_size``, ``global_timeout``, the llama.cpp backend, and extra
llama.cpp arguments appended after ``--parallel 1 --threads N``.  Unknown keys are refused by
name, so a typo never silently does nothing.

Precedence, for every value: flags > environment > this file > pins and defaults.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any, NamedTuple

from hal0_lemonade import cpus as cpu_probe
from hal0_lemonade.errors import UsageError
from hal0_lemonade.layout import HostPath, Layout

PATH = "/etc/hal0/lemonade.toml"
DEFAULT_PORT = 13305
# Flags llamacpp.extra_args may not carry, with why: the --parallel 1 --threads N invariant,
# and llama-server's own listener, which stays where lemond puts it (loopback).  A flag is
# matched in its "--flag value" and "--flag=value" forms alike.
FORBIDDEN_ARGS: dict[str, str] = {
    **dict.fromkeys(
        ("-t", "--threads", "-np", "--parallel"),
        "hal0 fixes --parallel 1 --threads N (set `threads` instead)",
    ),
    **dict.fromkeys(
        ("--host", "--port"),
        "llama-server listens where lemond puts it, on loopback only",
    ),
}
BACKENDS = ("rocm", "vulkan", "cpu")


def _int_range(low: int, high: int) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        if isinstance(value, bool) or not isinstance(value, int):
            return f"must be an integer, not {type(value).__name__}"
        if not low <= value <= high:
            return f"must be between {low} and {high}, not {value}"
        return None

    return check


def _backend(value: Any) -> str | None:
    if value not in BACKENDS:
        return f"must be one of {', '.join(BACKENDS)}, not {value!r}"
    return None


def split_extra_args(value: Any) -> list[str]:
    """``extra_args`` as tokens: a shell-quoted string or a list of strings."""
    if isinstance(value, str):
        try:
            return shlex.split(value)
        except ValueError as exc:
            raise ValueError(f"cannot be split into arguments: {exc}") from None
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value)
    raise ValueError("must be a string or a list of strings")


def _extra_args(value: Any) -> str | None:
    try:
        tokens = split_extra_args(value)
    except ValueError as exc:
        return str(exc)
    name = forbidden_flag(tokens)
    if name is not None:
        return f"may not contain {name}: {FORBIDDEN_ARGS[name]}"
    return None


def forbidden_flag(tokens: list[str]) -> str | None:
    """The first flag of :data:`FORBIDDEN_ARGS` in ``tokens``, in either form."""
    for token in tokens:
        name = token.split("=", 1)[0]
        if name in FORBIDDEN_ARGS:
            return name
    return None


class Key(NamedTuple):
    name: str  # dotted, as written in the TOML file
    check: Callable[[Any], str | None]
    help: str
    env: str | None = None  # the environment variable that overrides the file


KEYS: dict[str, Key] = {
    k.name: k
    for k in (
        Key("port", _int_range(1024, 65535), "lemond's loopback port", "HAL0_LEMONADE_PORT"),
        Key(
            "threads",
            _int_range(cpu_probe.MIN_THREADS, 1024),
            "llama.cpp --threads N (default: from the CPU budget)",
            "HAL0_LEMONADE_THREADS",
        ),
        Key("max_loaded_models", _int_range(1, 64), "models lemond keeps loaded"),
        Key("ctx_size", _int_range(512, 1 << 20), "default context size"),
        Key("global_timeout", _int_range(1, 86400), "lemond's request timeout, seconds"),
        Key("llamacpp.backend", _backend, "llama.cpp backend"),
        Key("llamacpp.extra_args", _extra_args, "appended after --parallel 1 --threads N"),
    )
}
# Keys the baseline locks, with why; naming one gets a specific refusal.
LOCKED: dict[str, str] = {
    "host": "lemond listens on loopback only",
    "config_version": "it is lemond's schema version",
    "extra_models_dir": "hal0 keeps models in /var/lib/hal0/models",
    "no_broadcast": "hal0 does not announce lemond on the network",
    "llamacpp.args": "--parallel 1 --threads N is fixed; use llamacpp.extra_args to add more",
    "llamacpp.prefer_system": "hal0 runs the llama.cpp build lemond ships",
}
# config.json keys the operator file sets directly (port and threads go through Settings).
DAEMON_KEYS = ("max_loaded_models", "ctx_size", "global_timeout", "llamacpp.backend")


class OperatorConfig(NamedTuple):
    path: HostPath | None  # None: not read from a file (tests, defaults)
    present: bool = False
    values: Mapping[str, Any] = MappingProxyType({})  # dotted key -> validated value

    def extra_args(self) -> str:
        """``llamacpp.extra_args`` normalised to one shell-quoted string ("" when unset)."""
        value = self.values.get("llamacpp.extra_args")
        return shlex.join(split_extra_args(value)) if value is not None else ""


def none() -> OperatorConfig:
    """No operator file: pins and defaults only."""
    return OperatorConfig(None)


def flatten(doc: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested tables as dotted keys (``{"a": {"b": 1}}`` -> ``{"a.b": 1}``)."""
    flat: dict[str, Any] = {}
    for key, value in doc.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, dotted + "."))
        else:
            flat[dotted] = value
    return flat


def _refuse(where: str, key: str, why: str, hint: str) -> UsageError:
    return UsageError(f"{where}: {key} {why}", hint=hint)


def parse(text: str, where: str = PATH) -> dict[str, Any]:
    """Parse and validate the TOML text; raise UsageError naming the first bad key."""
    import tomllib  # only when an operator file exists: keeps a no-op install's start fast

    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(
            f"{where} is not valid TOML: {exc}",
            hint="fix the syntax, or move the file away to use the defaults",
        ) from None
    values = flatten(doc)
    for key, value in values.items():
        if key in LOCKED:
            raise _refuse(where, key, "is locked by hal0", LOCKED[key])
        spec = KEYS.get(key)
        if spec is None:
            import difflib

            close = difflib.get_close_matches(key, list(KEYS), n=1)
            maybe = f"did you mean {close[0]!r}? " if close else ""
            raise _refuse(
                where, repr(key), "is not a known key", f"{maybe}known keys: {', '.join(KEYS)}"
            )
        problem = spec.check(value)
        if problem:
            raise _refuse(where, key, problem, f"{key}: {spec.help}")
    return values


def load(layout: Layout) -> OperatorConfig:
    path = layout.at(PATH)
    try:
        text = path.real.read_text("utf-8")
    except FileNotFoundError:
        return OperatorConfig(path)
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(
            f"{path} cannot be read: {exc}", hint="check its permissions and encoding (UTF-8)"
        ) from None
    return OperatorConfig(path, True, parse(text, str(path)))


def from_env(env: Mapping[str, str]) -> dict[str, Any]:
    """The keys that have an environment variable, validated like the file's."""
    values: dict[str, Any] = {}
    for key in KEYS.values():
        raw = env.get(key.env) if key.env else None
        if raw is None or raw.strip() == "":
            continue
        try:
            value: Any = int(raw)
        except ValueError:
            value = raw
        problem = key.check(value)
        if problem:
            raise UsageError(f"{key.env}={raw!r}: {key.name} {problem}", hint=key.help)
        values[key.name] = value
    return values


class Resolved(NamedTuple):
    value: Any
    source: str  # "--threads", "HAL0_LEMONADE_PORT", "/etc/hal0/lemonade.toml", "default"


def resolve(
    key: str,
    *,
    flag: Any,
    flag_name: str,
    env_values: Mapping[str, Any],
    operator: OperatorConfig,
    default: Any,
    default_source: str = "default",
) -> Resolved:
    """One value by precedence: flag > environment > operator file > default."""
    if flag is not None:
        return Resolved(flag, flag_name)
    if key in env_values:
        return Resolved(env_values[key], KEYS[key].env or "environment")
    if key in operator.values:
        return Resolved(operator.values[key], str(operator.path or PATH))
    return Resolved(default, default_source)


def resolve_port(env_values: Mapping[str, Any], operator: OperatorConfig) -> Resolved:
    """lemond's port: environment > operator file > 13305 (no flag sets it)."""
    return resolve(
        "port",
        flag=None,
        flag_name="",
        env_values=env_values,
        operator=operator,
        default=DEFAULT_PORT,
    )


def daemon_overrides(operator: OperatorConfig) -> dict[str, Any]:
    """The config.json keys the operator file sets, as a nested dict to lay over the baseline."""
    nested: dict[str, Any] = {}
    for dotted in DAEMON_KEYS:
        if dotted in operator.values:
            *parents, leaf = dotted.split(".")
            node = nested
            for part in parents:
                node = node.setdefault(part, {})
            node[leaf] = operator.values[dotted]
    return nested
