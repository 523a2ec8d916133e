"""Acting as the parties root must not trust: the sandbox's ``hal0`` account, or ``nobody``.

The attacks run as real processes under those uids (root switches to them with the stdlib's
``user=``/``group=``), through Debian's ``/usr/bin/python3``: an interpreter every uid can
read, unlike a pyenv build under /root.  The sandbox root lives in a directory they can
traverse (pytest's own tmp dirs are mode 0700 root).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

SYSTEM_PYTHON = "/usr/bin/python3"
NOBODY = 65534
# The installer as an operator runs it: a process of its own, so a hang is a hang of the
# child (killed at the timeout), not of the test run.
_CLI_ENV = {k: v for k, v in os.environ.items() if not k.startswith("HAL0_")}


@dataclass(frozen=True)
class Account:
    uid: int
    gid: int


def sandbox_account(root: Path, name: str = "hal0") -> Account:
    """The account as the sandbox root's own passwd defines it (it need not exist here)."""
    for line in (root / "etc/passwd").read_text().splitlines():
        fields = line.split(":")
        if fields[0] == name:
            return Account(int(fields[2]), int(fields[3]))
    raise LookupError(f"no {name} in {root}/etc/passwd")


def act_as(who: Account, code: str, *, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """Run ``code`` (Python) as ``who``, with no supplementary groups; raise if it fails."""
    done = subprocess.run(
        [SYSTEM_PYTHON, "-I", "-c", textwrap.dedent(code)],
        user=who.uid, group=who.gid, extra_groups=[], capture_output=True, text=True,
        timeout=timeout, check=False, cwd="/",
    )  # fmt: skip
    assert done.returncode == 0, f"the attack itself failed:\n{done.stderr}"
    return done


def start_as(who: Account, code: str) -> subprocess.Popen[str]:
    """Like :func:`act_as`, left running (the caller ends it)."""
    return subprocess.Popen(
        [SYSTEM_PYTHON, "-I", "-c", textwrap.dedent(code)],
        user=who.uid, group=who.gid, extra_groups=[], stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd="/",
    )  # fmt: skip


READABLE_PYTHON_ENV = "HAL0_TEST_READABLE_PYTHON"


def _everyone_can_reach(path: Path) -> bool:
    """Every directory on the way to ``path`` lets others through (mode o+x)."""
    return all(part.stat().st_mode & 0o001 for part in [path, *path.parents] if part.is_dir())


def readable_python() -> str:
    """An interpreter, with this project importable, that another uid can run.

    ``sys.executable`` when it qualifies; a pyenv build under /root (mode 0700) does not, so
    ``scripts/test`` names Debian's venv (.venv, python 3.11.2) in HAL0_TEST_READABLE_PYTHON.
    """
    import hal0_lemonade  # where this interpreter imports the package from

    package = Path(hal0_lemonade.__file__).resolve().parent
    places = [Path(sys.executable).resolve(), Path(sys.base_prefix), Path(sys.prefix), package]
    if all(_everyone_can_reach(place) for place in places):
        return sys.executable
    fallback = os.environ.get(READABLE_PYTHON_ENV, "")
    if fallback and Path(fallback).exists():
        return fallback
    import pytest  # support code: only tests import it

    reason = (
        f"{sys.executable} is not reachable by other users and {READABLE_PYTHON_ENV} names no "
        "interpreter that is (scripts/test sets it)"
    )
    raise pytest.skip.Exception(reason)


def run_cli(
    *args: str | Path, timeout: float = 60, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``python -m hal0_lemonade ARGS`` as a process; a TimeoutExpired is the test's failure."""
    return subprocess.run(
        [sys.executable, "-m", "hal0_lemonade", *map(str, args)],
        capture_output=True, text=True, timeout=timeout, check=False,
        env={**_CLI_ENV, **(env or {})},
    )  # fmt: skip


@contextmanager
def traversable_root(prefix: str = "hal0-attack-") -> Iterator[Path]:
    """An empty sandbox root every uid can traverse (0755 all the way down from /tmp)."""
    base = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    try:
        base.chmod(0o755)
        root = base / "root"
        root.mkdir(mode=0o755)
        root.chmod(0o755)
        yield root
    finally:
        shutil.rmtree(base, ignore_errors=True)
