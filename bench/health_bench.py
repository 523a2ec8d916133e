"""Measurement 4: from the daemon answering health to ``wait_healthy`` returning.

What is measured: hal0_lemonade.health.wait_healthy (the installer's own poll loop, in this
process) against a real separate process that starts answering at a known CLOCK_MONOTONIC
instant.  What is not: systemd starting the unit, lemond's own start-up, the
``systemctl show`` round trips of the installer's ``still_running`` check (one variant below
forks a real ``systemctl --version`` every 0.25 s as a lower bound for that cost), and the
reporter printing the result.
"""

from __future__ import annotations

import random
import subprocess
import sys
import time
from collections.abc import Callable

from tests.support.httpserver import free_port

from bench.context import REPO
from bench.results import HealthResult
from hal0_lemonade import health


def _forking_still_running() -> str | None:
    subprocess.run(["systemctl", "--version"], capture_output=True, check=False)
    return None


def one(mode: str, delay: float, still_running: Callable[[], str | None] | None) -> float:
    port = free_port()
    ready_at = time.monotonic() + delay
    child = subprocess.Popen(
        [sys.executable, "-m", "bench.health_server", str(port), repr(ready_at), mode],
        cwd=REPO,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        answer = health.wait_healthy("127.0.0.1", port, timeout=10.0, still_running=still_running)
        done = time.monotonic()
        if answer is None:
            raise RuntimeError("the stand-in daemon never became healthy")
        if child.stdout is None:
            raise RuntimeError("no stdout pipe")
        became = float(child.stdout.readline())
    finally:
        if child.stdin is not None:
            child.stdin.close()
        child.wait(timeout=10)
    return (done - became) * 1000.0


def run(samples: int, seed: int = 4) -> list[HealthResult]:
    rng = random.Random(seed)  # noqa: S311 - spreads the ready instant over poll phases
    variants: list[tuple[str, str, Callable[[], str | None] | None]] = [
        ("port closed until ready", "refuse", None),
        ("port open, 503 until ready", "503", None),
        ("port closed until ready + forking still_running", "refuse", _forking_still_running),
    ]
    results = []
    for label, mode, still in variants:
        ms = [one(mode, rng.uniform(0.3, 1.5), still) for _ in range(samples)]
        results.append(HealthResult(label, ms))
    return results
