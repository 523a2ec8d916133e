"""Stopping lemond: POST /internal/shutdown with and without a body length, and SIGTERM."""

from __future__ import annotations

import signal

import pytest

from tests.contract.conftest import Launcher
from tests.contract.daemon import Lemond, port_bindable

pytestmark = pytest.mark.contract


def test_shutdown_with_content_length_0(lemond: Lemond, launcher: Launcher) -> None:
    """`curl -d '' URL`: an answer, then exit 0."""
    daemon = launcher.start()
    daemon.wait_healthy()
    answer = daemon.request("POST", "/internal/shutdown", b"")
    assert (answer.status, answer.body) == (200, {"status": "shutting down"})
    assert daemon.wait_exit() == 0


def test_shutdown_without_a_body_length(lemond: Lemond, launcher: Launcher) -> None:
    """`curl -X POST URL` (no Content-Length): 10.x waits ~5 s for a body, answers 400 and
    keeps running; 11.x stops as with a length."""
    daemon = launcher.start()
    daemon.wait_healthy()
    answer = daemon.request("POST", "/internal/shutdown", None, timeout=30)
    if lemond.v11:
        assert (answer.status, answer.body) == (200, {"status": "shutting down"})
        assert answer.seconds < 4
        assert daemon.wait_exit() == 0
        return
    assert answer.status == 400
    assert answer.body == {"error": {"message": "Bad request", "type": "bad_request"}}
    assert 4 <= answer.seconds < 15
    assert daemon.alive()
    assert daemon.wait_healthy(timeout=5)["status"] == "ok"


def test_sigterm_exits_0_after_cleanup(lemond: Lemond, launcher: Launcher) -> None:
    daemon = launcher.start()
    websocket_port = daemon.wait_healthy()["websocket_port"]
    daemon.proc.send_signal(signal.SIGTERM)
    assert daemon.wait_exit() == 0
    output = daemon.output()
    assert "Shutdown signal received" in output
    assert "Cleanup complete" in output
    assert output.index("Shutdown signal received") < output.index("Cleanup complete")
    # Both listeners are gone: a restarted lemond (SO_REUSEPORT) gets its port back at once.
    assert port_bindable("127.0.0.1", daemon.port, reuse_port=True)
    assert port_bindable("127.0.0.1", websocket_port)
