"""The kill-point hook itself: dies exactly where asked, traces when asked, else does nothing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = """
from hal0_lemonade import failpoints
for name in ["a", "b", "a", "a"]:
    failpoints.hit(name)
    print(name, flush=True)
"""


def _run(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("HAL0_LEMONADE_")}
    return subprocess.run(
        [sys.executable, "-c", SCRIPT], env={**clean, **env},
        capture_output=True, text=True, check=False, timeout=30,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("kill_at", "printed"),
    [
        ("a", ""),  # the first hit of "a"
        ("a#1", ""),
        ("b", "a\n"),
        ("a#2", "a\nb\n"),
        ("a#3", "a\nb\na\n"),
    ],
)
def test_it_kills_at_the_named_hit(kill_at: str, printed: str) -> None:
    done = _run({"HAL0_LEMONADE_KILL_AT": kill_at})
    assert done.returncode == -signal.SIGKILL
    assert done.stdout == printed


@pytest.mark.parametrize("kill_at", ["a#4", "c", "", "a#0"])
def test_a_point_never_reached_changes_nothing(kill_at: str) -> None:
    done = _run({"HAL0_LEMONADE_KILL_AT": kill_at})
    assert done.returncode == 0, done.stderr
    assert done.stdout == "a\nb\na\na\n"


def test_tracing_alone_never_kills(tmp_path: Path) -> None:
    trace = tmp_path / "trace"
    done = _run({"HAL0_LEMONADE_FAILPOINT_TRACE": str(trace)})
    assert done.returncode == 0, done.stderr
    assert trace.read_text().split() == ["a#1", "b#1", "a#2", "a#3"]


def test_without_the_variables_it_is_inert() -> None:
    done = _run({})
    assert done.returncode == 0
    assert done.stdout == "a\nb\na\na\n"
