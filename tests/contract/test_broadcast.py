"""The UDP discovery beacon: a socket on 0.0.0.0 sending to port 13305 every 2 s, switched
off by no_broadcast (10.x) or broadcast: false (11.x), which is where an 11.x migration
followed by a downgrade to 10.x turns it back on."""

from __future__ import annotations

import contextlib
import json
import socket
import time
from collections.abc import Iterator

import pytest

from tests.contract.conftest import Launcher, Trees
from tests.contract.daemon import Lemond, Running, wait_until
from tests.contract.spec import BEACON_PORT
from tests.support.httpserver import free_port

pytestmark = pytest.mark.contract

QUIET_S = 1.5  # lemond opens its beacon socket with its listeners, well within this


def assert_quiet(daemon: Running) -> None:
    daemon.wait_healthy()
    time.sleep(QUIET_S)
    assert daemon.udp_on_any() == [], daemon.sockets()


def assert_broadcasting(daemon: Running) -> None:
    daemon.wait_healthy()
    wait_until("a UDP socket on 0.0.0.0", lambda: daemon.udp_on_any() != [], 10)


@contextlib.contextmanager
def beacon_listener() -> Iterator[socket.socket]:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", BEACON_PORT))
        except OSError as exc:
            pytest.skip(f"cannot listen for the beacon on UDP 127.0.0.1:{BEACON_PORT}: {exc}")
        sock.settimeout(10)
        yield sock


def test_no_broadcast_true_means_no_beacon(lemond: Lemond, launcher: Launcher) -> None:
    # 11.x reads it through its migration (broadcast: false), 10.x directly.
    assert_quiet(launcher.start({"config_version": 1, "no_broadcast": True}))


def test_beacon_by_default(lemond: Lemond, launcher: Launcher) -> None:
    with beacon_listener() as listener:
        daemon = launcher.start({"config_version": 1})
        assert_broadcasting(daemon)
        expected = f"http://127.0.0.1:{daemon.port}/api/v1/"
        deadline = time.monotonic() + 10
        while True:  # other lemonds on this host may beacon too: find ours
            beacon = json.loads(listener.recv(4096))
            if beacon.get("url") == expected or time.monotonic() > deadline:
                break
    assert beacon == {"service": "lemonade", "hostname": socket.gethostname(), "url": expected}


def test_11x_broadcast_flags_override_without_saving(lemond: Lemond, launcher: Launcher) -> None:
    if not lemond.v11:
        pytest.skip("10.x has no --broadcast/--no-broadcast (exit 109: test_usage_errors)")
    for flag, saved in (("--no-broadcast", True), ("--broadcast", False)):
        port = free_port()
        text = json.dumps(
            {"config_version": 2, "broadcast": saved, "host": "127.0.0.1", "port": port}
        )
        daemon = launcher.start(text, args=[flag], port=port)
        if saved:
            assert_quiet(daemon)
        else:
            assert_broadcasting(daemon)
        assert daemon.config_file.read_text() == text, "a flag is not saved"


def test_10x_broadcasts_on_a_config_11x_migrated(
    kind: str, trees: Trees, launcher: Launcher
) -> None:
    """hal0's no_broadcast: true, migrated by 11.7.0 to broadcast: false, means nothing to
    10.6.0 (a rollback): it looks for no_broadcast, finds none, and broadcasts."""
    v10, v11 = trees.get(kind, "10.6.0"), trees.get(kind, "11.7.0")
    upgraded = launcher.start({"config_version": 1, "no_broadcast": True}, lemond=v11)
    assert_quiet(upgraded)
    upgraded.kill()
    migrated = json.loads(upgraded.config_file.read_text())
    assert (migrated["broadcast"], "no_broadcast" in migrated) == (False, False)
    text = upgraded.config_file.read_text()
    rolled_back = launcher.start(None, lemond=v10, cache=upgraded.cache, port=upgraded.port)
    assert_broadcasting(rolled_back)
    assert rolled_back.config_file.read_text() == text, "10.x does not rewrite it"
