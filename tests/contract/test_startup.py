"""A started lemond: health JSON, listeners, cache dir, log file, a taken HTTP port."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.contract.conftest import Launcher
from tests.contract.daemon import Lemond, Sock, first_bindable_port, held_port, wait_until
from tests.contract.spec import (
    STANDIN_FILES,
    STANDIN_HEALTH_EXTRAS,
    WEBSOCKET_FIRST_PORT,
    health_keys,
    model_types,
)
from tests.support.httpserver import free_port

pytestmark = pytest.mark.contract


def test_health_on_the_configured_host_and_port(lemond: Lemond, launcher: Launcher) -> None:
    daemon = launcher.start({"max_loaded_models": 3})
    health = daemon.wait_healthy()
    extras = set(health) & STANDIN_HEALTH_EXTRAS
    assert not extras or lemond.kind == "standin", f"the real lemond has {extras}?"
    assert set(health) - STANDIN_HEALTH_EXTRAS == health_keys(lemond.major), health
    assert health["status"] == "ok"
    assert health["version"] == lemond.version
    assert health["model_loaded"] is None
    assert health["all_models_loaded"] == []
    # One limit per model type, all max_loaded_models; 11.x adds "classification".
    assert health["max_models"] == dict.fromkeys(model_types(lemond.major), 3)
    assert isinstance(health["websocket_port"], int)
    assert health["websocket_port"] >= WEBSOCKET_FIRST_PORT
    if lemond.v11:
        assert health["pinned_models"] == dict.fromkeys(model_types(11), 0)
        assert health["pinned_helper_models"] == dict.fromkeys(model_types(11), 0)
        assert health["telemetry"] == {"enabled": False}
        assert isinstance(health["update_check_done"], bool)
    for path in ("/api/v0/health", "/v1/health"):
        other = daemon.get(path)
        assert other.status == 200
        assert set(other.body) == set(health), path
    assert daemon.get("/live").body == {"status": "ok"}
    missing = daemon.get("/api/v1/nope")
    assert missing.status == 404
    assert missing.body["error"]["type"] == "not_found"
    assert missing.body["error"]["path"] == "/api/v1/nope"
    # lemond makes bin/ (downloaded backends) in its cache dir and nothing else at start.
    assert (daemon.cache / "bin").is_dir()
    assert {p.name for p in daemon.cache.iterdir()} - STANDIN_FILES == {"bin", "config.json"}


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2"])
def test_websocket_listener_on_the_first_free_port_from_9000(
    lemond: Lemond, launcher: Launcher, host: str
) -> None:
    """Listens on the configured host; "free" means bindable on 127.0.0.1 (measured: a port
    held on 127.0.0.1 is skipped even when lemond listens on 127.0.0.2)."""
    taken = first_bindable_port(WEBSOCKET_FIRST_PORT)
    with held_port("127.0.0.1", taken):
        expected = first_bindable_port(WEBSOCKET_FIRST_PORT)
        assert expected > taken
        daemon = launcher.start(host=host)
        health = daemon.wait_healthy()
        assert health["websocket_port"] == expected
        listening = {(s.address, s.port) for s in daemon.sockets() if s.listening}
        assert listening == {(host, daemon.port), (host, expected)}, daemon.sockets()


def test_a_taken_websocket_port_leaves_lemond_without_one(
    lemond: Lemond, launcher: Launcher
) -> None:
    port = free_port()
    with held_port("127.0.0.1", port):
        daemon = launcher.start({"websocket_port": port})
        health = daemon.wait_healthy()
        daemon.wait_output("Failed to start WebSocket server")
    assert "websocket_port" not in health
    assert set(health) - STANDIN_HEALTH_EXTRAS == health_keys(lemond.major) - {"websocket_port"}


TMP = "tmp-fallback"  # 10.x's /tmp/lemonade-server.log
LOG_CASES: dict[str, tuple[dict[str, str | None], str, str | None]] = {
    # name: (environment, where 10.x logs, where 11.x logs; None: 11.x exits 1)
    "xdg": ({}, "xdg/lemonade/lemonade-server.log", "xdg/lemonade/lemonade-server.log"),
    "xdg-and-runtime-directory": (
        {"RUNTIME_DIRECTORY": "rd"},
        "xdg/lemonade/lemonade-server.log",
        "xdg/lemonade/lemonade-server.log",
    ),
    "runtime-directory": (
        {"XDG_RUNTIME_DIR": None, "RUNTIME_DIRECTORY": "rd"},
        TMP,
        "rd/lemonade-server.log",
    ),
    "missing-xdg-dir": (
        {"XDG_RUNTIME_DIR": "nonexistent", "RUNTIME_DIRECTORY": "rd"},
        TMP,
        "rd/lemonade-server.log",
    ),
    # systemd joins several RuntimeDirectory= with ":"; 11.x does not split the list.
    "runtime-directory-list": (
        {"XDG_RUNTIME_DIR": None, "RUNTIME_DIRECTORY": "rd:rd2"}, TMP, None
    ),
    "neither": ({"XDG_RUNTIME_DIR": None}, TMP, None),
}  # fmt: skip


@pytest.mark.parametrize("case", list(LOG_CASES))
def test_log_file_location(
    lemond: Lemond, launcher: Launcher, tmp_path: Path, tmp_log: Path, case: str
) -> None:
    overrides, v10_place, v11_place = LOG_CASES[case]
    base = tmp_path / "runtime"
    for name in ("xdg", "rd", "rd2"):
        (base / name).mkdir(parents=True)
    env: dict[str, str | None] = {"XDG_RUNTIME_DIR": str(base / "xdg")}
    for key, value in overrides.items():
        env[key] = None if value is None else ":".join(str(base / v) for v in value.split(":"))
    daemon = launcher.start(env=env)
    place = v11_place if lemond.v11 else v10_place
    if place is None:
        assert daemon.wait_exit() == 1
        assert (
            "Error: Unable to resolve writable runtime directory from XDG_RUNTIME_DIR or "
            "RUNTIME_DIRECTORY" in daemon.output()
        )
        # 11.x settles config.json (here: migrates it) before it looks for a runtime dir.
        assert json.loads(daemon.config_file.read_text())["config_version"] == 2
        assert not (daemon.cache / "bin").exists()
        return
    daemon.wait_healthy()
    log = tmp_log if place == TMP else base / place
    marker = f"Cache dir: {daemon.cache}"
    wait_until(f"{marker!r} in {log}", lambda: log.is_file() and marker in log.read_text(), 10)
    assert marker in daemon.output(), "lemond logs to stdout as well"
    if place == TMP:
        assert list((base / "rd").iterdir()) == [], "10.x ignores RUNTIME_DIRECTORY"


@pytest.mark.parametrize("holder", ["listening", "bound"])
def test_a_taken_http_port(lemond: Lemond, launcher: Launcher, holder: str) -> None:
    """10.x logs the failed bind and runs on without HTTP; 11.x connects to its port first
    and refuses to run if something answers, and gives up if the bind fails."""
    port = free_port()
    with held_port("127.0.0.1", port, listen=holder == "listening"):
        daemon = launcher.start(port=port)
        if lemond.v11:
            assert daemon.wait_exit() == 1
            if holder == "listening":
                expected = f"Port {port} on 127.0.0.1 is already in use."
            else:
                expected = "(bind or listen failure). Server startup aborted."
            assert expected in daemon.output()
            return
        daemon.wait_output(f"[Error] (Server) Failed to bind IPv4 HTTP server to 127.0.0.1:{port}")
        # Still there, holding its WebSocket listener, with no HTTP port of its own.
        wait_until("the WebSocket listener", lambda: _listeners(daemon.sockets()) != [], 10)
        assert daemon.alive()
        assert port not in _listeners(daemon.sockets())


def test_a_second_lemond_on_the_same_port(lemond: Lemond, launcher: Launcher) -> None:
    """lemond binds its HTTP port with SO_REUSEPORT: a second 10.x of the same user binds it
    too (the kernel shares the connections between both); 11.x's second one exits 1."""
    first = launcher.start()
    first.wait_healthy()
    second = launcher.start(port=first.port)
    if lemond.v11:
        assert second.wait_exit() == 1
        assert f"Port {first.port} on 127.0.0.1 is already in use." in second.output()
        return
    wait_until("the second one's listener", lambda: first.port in _listeners(second.sockets()), 10)
    assert first.alive()
    assert second.alive()


def _listeners(sockets: list[Sock]) -> list[int]:
    return [s.port for s in sockets if s.listening]
