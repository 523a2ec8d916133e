"""Named kill points: a test hook for proving crash safety.  Inert unless asked for.

``hit(name)`` is placed at every step boundary and at points inside the download, the
extraction and every atomic write.  When the environment variable ``HAL0_LEMONADE_KILL_AT``
equals ``name`` (kill at the first hit) or ``name#N`` (kill at the N-th hit of that name), the
process SIGKILLs itself on the spot: no ``finally``, no ``atexit``, no flushing -- exactly what
an OOM kill or a power cut does to the process.  ``HAL0_LEMONADE_FAILPOINT_TRACE=FILE`` appends
every hit (``name#N``) to FILE, which is how the fault-injection suite lists the points.

Operators never set these.  With neither variable set, ``hit`` is one dict lookup.
"""

from __future__ import annotations

import os
import signal

KILL_ENV = "HAL0_LEMONADE_KILL_AT"
TRACE_ENV = "HAL0_LEMONADE_FAILPOINT_TRACE"

_counts: dict[str, int] = {}


def hit(name: str) -> None:
    """Die here if the kill point ``name`` (or its N-th hit) was asked for."""
    kill_at = os.environ.get(KILL_ENV)
    trace = os.environ.get(TRACE_ENV)
    if not kill_at and not trace:
        return
    count = _counts[name] = _counts.get(name, 0) + 1
    if trace:
        with open(trace, "a", encoding="utf-8") as log:  # noqa: PTH123 - hot path, no Path
            log.write(f"{name}#{count}\n")
    if kill_at and (kill_at == f"{name}#{count}" or (kill_at == name and count == 1)):
        os.kill(os.getpid(), signal.SIGKILL)
