"""The ``HAL0_*`` environment variables, read and checked once, before any command does work.

Every command starts here, so a malformed value is the same usage error (exit 2, with what the
variable means as the hint) whichever command meets it, and nothing is half done when it is
refused.  Elsewhere only the terminal's variables (``NO_COLOR``, ``TERM``: the renderer), the
proxy variables (urllib) and the test hooks of :mod:`hal0_lemonade.failpoints` are read.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any, NamedTuple

from hal0_lemonade import opconfig
from hal0_lemonade.archive_policy import Limits
from hal0_lemonade.errors import UsageError


def _seconds(low: float, high: float) -> Callable[[str], float | None]:
    def parse(raw: str) -> float | None:
        try:
            value = float(raw)
        except ValueError:
            return None
        return value if low < value <= high and math.isfinite(value) else None

    return parse


def _wait(raw: str) -> float | None:
    try:
        value = float(raw)
    except ValueError:
        return None
    return value if 0 <= value < math.inf else None


def _count(raw: str) -> int | None:
    return int(raw) if raw.isdigit() and int(raw) >= 1 else None


class Variable(NamedTuple):
    name: str
    parse: Callable[[str], Any]  # the value, or None when malformed
    expects: str  # what a good value is, for the error
    meaning: str  # what it does, for the hint


VARIABLES = {
    v.name: v
    for v in (
        Variable(
            "HAL0_LEMONADE_HTTP_TIMEOUT",
            _seconds(0, 3600),
            "a number of seconds in (0, 3600]",
            "the connect and read timeout of downloads (default 30)",
        ),
        Variable(
            "HAL0_LEMONADE_HTTP_DEADLINE",
            _seconds(0, 86400),
            "a number of seconds in (0, 86400]",
            "the most a whole download may take (default 1800)",
        ),
        Variable(
            "HAL0_LEMONADE_LOCK_WAIT",
            _wait,
            "a number of seconds, 0 or more",
            "how long a second install, rollback or uninstall waits for the lock (default 60)",
        ),
        Variable(
            "HAL0_LEMONADE_MAX_UNPACKED_BYTES",
            _count,
            "a positive whole number",
            "the most bytes an archive may unpack to, or be (default 4 GiB)",
        ),
        Variable(
            "HAL0_LEMONADE_MAX_ENTRIES",
            _count,
            "a positive whole number",
            "the most files, links and directories an archive may hold (default 20000)",
        ),
    )
}


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in {"1", "true", "yes", "on"}


class Environment(NamedTuple):
    http_timeout: float = 30.0
    http_deadline: float = 1800.0
    lock_wait: float = 60.0
    limits: Limits = Limits()
    skip_sha: bool = False  # HAL0_SKIP_LEMONADE_SHA=1: accept the all-zeros placeholder pin
    overrides: Mapping[str, Any] = MappingProxyType({})  # threads, port (opconfig keys)

    @classmethod
    def read(cls, env: Mapping[str, str] | None = None) -> Environment:
        """Parse every variable; :class:`UsageError` naming the first malformed one."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for var in VARIABLES.values():
            raw = env.get(var.name, "").strip()
            if not raw:
                continue
            value = var.parse(raw)
            if value is None:
                raise UsageError(
                    f"{var.name}={raw!r} is not {var.expects}",
                    hint=f"{var.name} sets {var.meaning}; unset it for the default",
                )
            values[var.name] = value
        defaults, unset = Limits(), cls()
        return cls(
            http_timeout=values.get("HAL0_LEMONADE_HTTP_TIMEOUT", unset.http_timeout),
            http_deadline=values.get("HAL0_LEMONADE_HTTP_DEADLINE", unset.http_deadline),
            lock_wait=values.get("HAL0_LEMONADE_LOCK_WAIT", unset.lock_wait),
            limits=Limits(
                max_total_bytes=values.get(
                    "HAL0_LEMONADE_MAX_UNPACKED_BYTES", defaults.max_total_bytes
                ),
                max_entries=values.get("HAL0_LEMONADE_MAX_ENTRIES", defaults.max_entries),
            ),
            skip_sha=_truthy(env.get("HAL0_SKIP_LEMONADE_SHA")),
            overrides=opconfig.from_env(env),
        )
