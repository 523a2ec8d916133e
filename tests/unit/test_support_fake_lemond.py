"""The fake lemond, run for real as a subprocess from an extracted test release."""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

import pytest

from tests.support.archives import ReleaseFactory, bake_fake_lemond
from tests.support.httpserver import free_port, wait_for_http

LLAMA_ARGS = "--parallel 1 --threads 2"
DEFAULT = "<config with a free port>"


def extract(archive: Path, dest: Path) -> Path:
    """Unpack like the installer would (top directory stripped); return the lemond path."""
    dest.mkdir(parents=True)
    subprocess.run(["tar", "-xzf", archive, "--strip-components=1", "-C", dest], check=True)
    return dest / "lemond"


@pytest.fixture
def lemond(release_factory: ReleaseFactory, tmp_path: Path) -> Path:
    return extract(release_factory("10.6.0").path, tmp_path / "opt")


class Running:
    def __init__(self, proc: subprocess.Popen[str], cache: Path, port: int) -> None:
        self.proc, self.cache, self.port = proc, cache, port

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def get(self, path: str) -> tuple[int, Any]:
        try:
            with urllib.request.urlopen(self.url(path), timeout=5) as response:
                return response.status, json.load(response)
        except urllib.error.HTTPError as exc:
            return exc.code, json.load(exc)

    def state(self) -> dict[str, Any]:
        state: dict[str, Any] = json.loads((self.cache / "fake-lemond.state.json").read_text())
        return state


class Start(Protocol):
    def __call__(
        self, lemond: Path, config: str | None = ..., env: dict[str, str] | None = ...
    ) -> Running: ...


def base_env(tmp_path: Path) -> dict[str, str]:
    """A runtime dir of the test's own: without one 10.x logs to /tmp/lemonade-server.log."""
    runtime = tmp_path / "xdg"
    runtime.mkdir(exist_ok=True)
    return {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "XDG_RUNTIME_DIR": str(runtime)}


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Start]:
    """Start lemond on a free port; ``config``: JSON text, None (no file) or DEFAULT."""
    procs: list[subprocess.Popen[str]] = []

    def run(
        lemond: Path, config: str | None = DEFAULT, env: dict[str, str] | None = None
    ) -> Running:
        cache = tmp_path / "cache"
        cache.mkdir(exist_ok=True)
        port = free_port()
        if config == DEFAULT:
            settings = {"host": "localhost", "port": port, "llamacpp": {"args": LLAMA_ARGS}}
            config = json.dumps(settings)
        if config is not None:
            (cache / "config.json").write_text(config)
        # Without a usable config.json, lemond falls back to resources/defaults.json.
        defaults = lemond.parent / "resources" / "defaults.json"
        defaults.write_text(json.dumps({**json.loads(defaults.read_text()), "port": port}))
        proc = subprocess.Popen(
            [lemond, cache],
            env=base_env(tmp_path) if env is None else env,
            stdout=subprocess.PIPE,
            text=True,
        )
        procs.append(proc)
        running = Running(proc, cache, port)
        wait_for_http(running.url("/api/v1/health"), timeout=10)
        return running

    yield run
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=5)


def test_version(lemond: Path) -> None:
    out = subprocess.run([lemond, "--version"], capture_output=True, text=True, check=True)
    assert out.stdout == "lemond version 10.6.0\n"


def test_health_and_state(lemond: Path, start: Start, tmp_path: Path) -> None:
    runtime = tmp_path / "run"
    runtime.mkdir()
    env = {**base_env(tmp_path), "RUNTIME_DIRECTORY": str(runtime), "HF_HOME": "/hf"}
    daemon = start(lemond, env=env)
    for path in ("/api/v1/health", "/api/v0/health", "/v1/health"):
        status, body = daemon.get(path)
        assert status == 200
        assert body["status"] == "ok"
        assert body["version"] == "10.6.0"
        assert body["pid"] == daemon.proc.pid
        assert body["llamacpp_args"] == LLAMA_ARGS
        assert body["config"]["port"] == daemon.port
    assert daemon.get("/live") == (200, {"status": "ok"})
    status, body = daemon.get("/nope")
    assert status == 404
    assert body["error"]["type"] == "not_found"
    state = daemon.state()
    assert state["pid"] == daemon.proc.pid
    assert state["port"] == daemon.port
    assert state["host"] == "localhost"
    assert state["argv"][1] == str(daemon.cache)
    assert state["env"] == {"RUNTIME_DIRECTORY": str(runtime), "HF_HOME": "/hf"}
    assert state["log_file"] == str(tmp_path / "xdg/lemonade/lemonade-server.log")
    assert state["websocket_port"] == daemon.get("/api/v1/health")[1]["websocket_port"]
    assert list(runtime.iterdir()) == [], "10.x leaves RUNTIME_DIRECTORY alone"


def test_shutdown_endpoint(lemond: Path, start: Start) -> None:
    daemon = start(lemond)
    request = urllib.request.Request(daemon.url("/internal/shutdown"), method="POST", data=b"")
    with urllib.request.urlopen(request, timeout=5) as response:
        assert json.load(response) == {"status": "shutting down"}
    assert daemon.proc.wait(timeout=5) == 0
    lines = (daemon.cache / "shutdown-requests.log").read_text().splitlines()
    assert [line.split(" ", 1)[1] for line in lines] == ["POST /internal/shutdown 200"]


def test_bodyless_shutdown_is_refused_and_recorded(lemond: Path, start: Start) -> None:
    """10.x waits ~5 s for a body that has no length, answers 400 and runs on; the evidence
    file records the refusal, so a test can tell a drain from a SIGTERM after it."""
    daemon = start(lemond)
    began = time.monotonic()
    # What `curl -X POST URL` sends: no Content-Length (urllib would add "0").
    conn = http.client.HTTPConnection("127.0.0.1", daemon.port, timeout=15)
    conn.putrequest("POST", "/internal/shutdown")
    conn.endheaders()
    assert conn.getresponse().status == 400
    conn.close()
    assert time.monotonic() - began >= 4
    assert daemon.proc.poll() is None
    lines = (daemon.cache / "shutdown-requests.log").read_text().splitlines()
    assert [line.split(" ", 1)[1] for line in lines] == ["POST /internal/shutdown 400"]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_stops_cleanly(lemond: Path, start: Start, signum: signal.Signals) -> None:
    daemon = start(lemond)
    daemon.proc.send_signal(signum)
    assert daemon.proc.wait(timeout=5) == 0
    assert signum.name in (daemon.cache / "signals.log").read_text()


def test_fail_at_start(release_factory: ReleaseFactory, tmp_path: Path) -> None:
    lemond = extract(release_factory("10.6.0", fail_at_start=True).path, tmp_path / "opt")
    (tmp_path / "cache").mkdir()
    out = subprocess.run(
        [lemond, tmp_path / "cache"], capture_output=True, text=True, timeout=10, check=False
    )
    assert out.returncode == 1
    assert "FAIL_AT_START" in out.stdout


def test_11x_without_a_writable_runtime_directory_refuses_to_start(
    release_factory: ReleaseFactory, tmp_path: Path
) -> None:
    lemond = extract(release_factory("11.7.0").path, tmp_path / "opt")
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "RUNTIME_DIRECTORY": "/nonexistent"}
    out = subprocess.run(
        [lemond, tmp_path / "cache"],
        capture_output=True,
        text=True,
        timeout=10,
        env=env,
        check=False,
    )
    assert out.returncode == 1
    assert "Unable to resolve writable runtime directory" in out.stdout


def test_corrupt_config_is_renamed(lemond: Path, start: Start) -> None:
    daemon = start(lemond, config="{not json")
    assert (daemon.cache / "config.json.corrupted").read_text() == "{not json"
    assert daemon.get("/api/v1/health")[1]["config"] == {}
    defaults = (lemond.parent / "resources/defaults.json").read_text()
    written = (daemon.cache / "config.json").read_text()
    assert written == json.dumps(json.loads(defaults), indent=2, sort_keys=True) + "\n"


def test_missing_config_gets_defaults_written(lemond: Path, start: Start) -> None:
    daemon = start(lemond, config=None)
    written = json.loads((daemon.cache / "config.json").read_text())
    assert written["port"] == daemon.port
    assert written["llamacpp"]["args"] == ""


def test_sandbox_probes(lemond: Path, start: Start, tmp_path: Path) -> None:
    daemon = start(lemond)
    ok_dir = daemon.get(f"/test/write?path={tmp_path}")[1]
    assert ok_dir == {"path": str(tmp_path), "ok": True, "error": None}
    ok_file = daemon.get(f"/test/write?path={tmp_path}/probe.txt")[1]
    assert ok_file["ok"] is True
    assert not (tmp_path / "probe.txt").exists()
    bad = daemon.get("/test/write?path=/nonexistent/dir/file")[1]
    assert bad["ok"] is False
    assert "FileNotFoundError" in bad["error"]
    assert daemon.get("/test/open?path=/dev/null")[1]["ok"] is True
    assert daemon.get("/test/open?path=/nonexistent")[1]["ok"] is False


def test_unbaked_template_runs(fake_lemond_path: Path) -> None:
    out = subprocess.run(
        ["python3", fake_lemond_path, "--version"], capture_output=True, text=True, check=True
    )
    assert out.stdout == "lemond version 0.0.0+unbaked\n"
    assert "VERSION = '1.2.3'  # @bake:VERSION" in bake_fake_lemond("1.2.3")
