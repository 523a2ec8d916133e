"""README's first command, ``bash scripts/demo``, run as a new user runs it.

It once hung for ever: it stopped the daemon with a bodyless POST, which lemond 10.x (and the
stand-in, since it follows the real contract) answers with 400 after waiting for a body, so
the demo failed and left the daemon running on port 13305 with the terminal's pipe open.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PORT = 13305  # the installed config's port: the demo runs the daemon against it

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the demo installs hal0 accounts")


def _port_taken() -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", PORT)) == 0


def test_the_demo_runs_end_to_end_and_leaves_no_daemon(tmp_path: Path) -> None:
    if _port_taken():
        pytest.skip(f"port {PORT} is taken on this machine: the demo would skip its health check")
    demo = tmp_path / "demo"
    log = tmp_path / "demo.out"
    # Output to a file, not a pipe: a daemon left behind would hold a pipe open, and the
    # demo's own session so that whatever it leaves is killed here.
    with log.open("wb") as out:
        proc = subprocess.Popen(
            ["bash", "scripts/demo"],
            cwd=REPO,
            env={**os.environ, "HAL0_DEMO_DIR": str(demo)},
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        code = proc.wait(timeout=300)
        left_running = _port_taken()
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    output = log.read_text(errors="replace")
    assert code == 0, output
    assert not left_running, f"the demo left its daemon running\n{output}"
    assert "no changes" in output  # the re-run on the converged root
    assert '"status":"ok"' in output  # the installed daemon answered health
    assert '{"status":"shutting down"}' in output
    assert f"demo done: sandbox root at {demo}/root" in output
