"""When the early flushes run while a release arrives (installer._EarlySync).

The flushes here are a stand-in for libc's ``syncfs``: a real disk cannot be made to take a
chosen time per flush, and the schedule is all these tests are about.  The real ``syncfs``
runs in every install test and in the kill-point suite.
"""

from __future__ import annotations

import itertools
import threading
import time
from pathlib import Path

import pytest

from hal0_lemonade import fsops
from hal0_lemonade.resources import installer

INTERVAL = 0.2  # larger than the real 50 ms, so a loaded CI machine's scheduling noise fits


class _Flushes:
    """Records when each flush starts; flush number ``slow`` takes ``slow_s``."""

    def __init__(self, slow: int, slow_s: float) -> None:
        self.starts: list[float] = []
        self.slow, self.slow_s = slow, slow_s
        self.enough = threading.Event()

    def __call__(self, fd: int) -> int:
        self.starts.append(time.monotonic())
        if len(self.starts) == self.slow:
            time.sleep(self.slow_s)
        if len(self.starts) >= 4:
            self.enough.set()
        return 0


def _run(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, flushes: _Flushes) -> list[float]:
    monkeypatch.setattr(installer._EarlySync, "INTERVAL", INTERVAL)
    monkeypatch.setattr(fsops, "libc_function", lambda name: flushes if name == "syncfs" else None)
    with installer._EarlySync(tmp_path):
        assert flushes.enough.wait(10)
    return flushes.starts


def test_a_flush_longer_than_the_interval_is_followed_at_once(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # The disk is the bottleneck: a pause after such a flush would only leave it idle.
    starts = _run(monkeypatch, tmp_path, _Flushes(slow=2, slow_s=3 * INTERVAL))
    second_ended = starts[1] + 3 * INTERVAL
    assert starts[2] - second_ended < INTERVAL / 2


def test_quick_flushes_start_an_interval_apart(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    starts = _run(monkeypatch, tmp_path, _Flushes(slow=0, slow_s=0.0))
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert min(gaps) >= INTERVAL * 0.9
