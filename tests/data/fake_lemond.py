#!/usr/bin/env python3
"""A stand-in for AMD's Lemonade Server daemon ``lemond``, for tests.

It obeys the parts of lemond's contract the installer relies on (see
LEMONADE-CONTRACT.md): ``lemond --version``, ``lemond [CACHE_DIR]`` reading
``CACHE_DIR/config.json``, the health endpoints and ``POST /internal/shutdown``.
It also records what it saw (``fake-lemond.state.json``, ``shutdown-requests.log``,
``signals.log`` in CACHE_DIR) and answers sandbox probes (``/test/write``,
``/test/open``) so booted-systemd tests can look at the service from inside.

Stdlib only: it must run on a bare Debian 12 ``python3``.

Baking scheme: the archive builder (tests/support/archives.py) rewrites every line
that ends in the marker comment ``# @bake:<NAME>`` and starts with ``<NAME> = ``,
replacing the value with ``repr()`` of the baked value. The template stays valid,
runnable Python with the unbaked defaults below, and the builder fails loudly if
a marked line is missing, so a renamed constant cannot silently stay unbaked.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

VERSION = "0.0.0+unbaked"  # @bake:VERSION
FAIL_AT_START = False  # @bake:FAIL_AT_START

DEFAULT_HOST = "localhost"
DEFAULT_PORT = 13305
STATE_FILE = "fake-lemond.state.json"
HEALTH_PATHS = frozenset({"/api/v1/health", "/api/v0/health", "/v1/health", "/live"})


def log(message: str) -> None:
    print(f"fake-lemond[{os.getpid()}]: {message}", file=sys.stderr, flush=True)


def append_line(path: Path, text: str) -> None:
    # Best effort: the log files are evidence for tests, never a reason to crash.
    try:
        with path.open("a", encoding="utf-8") as fh:
            fh.write(f"{time.time():.6f} {text}\n")
    except OSError as exc:
        log(f"cannot append to {path}: {exc}")


def write_json_atomic(path: Path, data: object) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    tmp.replace(path)


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def load_defaults() -> dict[str, Any]:
    # Like real lemond, defaults come from resources/defaults.json beside the binary.
    defaults_file = Path(sys.argv[0]).resolve().parent / "resources" / "defaults.json"
    try:
        loaded = json.loads(defaults_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        loaded = {}
    fallback: dict[str, Any] = {"host": DEFAULT_HOST, "port": DEFAULT_PORT}
    return deep_merge(fallback, loaded) if isinstance(loaded, dict) else fallback


def load_config(cache_dir: Path, defaults: dict[str, Any]) -> dict[str, Any]:
    """Return the overrides read from config.json ({} when missing or corrupt)."""
    config_file = cache_dir / "config.json"
    try:
        text = config_file.read_text(encoding="utf-8")
    except FileNotFoundError:
        # Real lemond writes its defaults when config.json is missing.
        try:
            write_json_atomic(config_file, defaults)
        except OSError as exc:
            log(f"cannot write default {config_file}: {exc}")
        return {}
    try:
        parsed = json.loads(text)
    except ValueError as exc:
        parsed = f"unparseable ({exc})"
    if not isinstance(parsed, dict):
        log(f"{config_file} is corrupt: {parsed!r}; renaming to config.json.corrupted")
        try:
            config_file.replace(cache_dir / "config.json.corrupted")
        except OSError as exc:
            log(f"cannot rename {config_file}: {exc}")
        return {}
    return parsed


def probe_write(target: str) -> str | None:
    path = Path(target)
    if path.is_dir():
        with tempfile.NamedTemporaryFile(dir=path, prefix=".fake-lemond-probe-"):
            pass
        return None
    with path.open("x", encoding="utf-8") as fh:
        fh.write("probe\n")
    path.unlink()
    return None


def probe_open(target: str) -> str | None:
    fd = os.open(target, os.O_RDWR)
    os.close(fd)
    return None


class Daemon:
    def __init__(self, cache_dir: Path, config: dict[str, Any], effective: dict[str, Any]):
        self.cache_dir = cache_dir
        self.config = config
        self.effective = effective
        self.stopping = threading.Event()
        self.server: ThreadingHTTPServer | None = None

    def llamacpp_args(self) -> str:
        section = self.effective.get("llamacpp")
        return str(section.get("args", "")) if isinstance(section, dict) else ""

    def health(self) -> dict[str, Any]:
        return {
            "status": "ok",
            "version": VERSION,
            "pid": os.getpid(),
            "uid": os.getuid(),
            "llamacpp_args": self.llamacpp_args(),
            "config": self.config,
        }

    def stop(self) -> None:
        # serve_forever() runs in the main thread; shutdown() must come from another one.
        if not self.stopping.is_set() and self.server is not None:
            self.stopping.set()
            threading.Thread(target=self.server.shutdown, daemon=True).start()


def make_handler(daemon: Daemon) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "fake-lemond"

        def reply(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(data)

        def probe(self, query: str, func: Callable[[str], str | None]) -> None:
            target = parse_qs(query).get("path", [""])[0]
            error: str | None
            try:
                error = func(target) if target else "missing ?path="
            except OSError as exc:
                error = f"{type(exc).__name__}: {exc}"
            self.reply(200, {"path": target, "ok": error is None, "error": error})

        def do_GET(self) -> None:
            url = urlsplit(self.path)
            if url.path in HEALTH_PATHS:
                self.reply(200, daemon.health())
            elif url.path == "/test/write":
                self.probe(url.query, probe_write)
            elif url.path == "/test/open":
                self.probe(url.query, probe_open)
            else:
                self.reply(404, {"error": "not found", "path": url.path})

        def do_POST(self) -> None:
            if urlsplit(self.path).path == "/internal/shutdown":
                append_line(daemon.cache_dir / "shutdown-requests.log", "POST /internal/shutdown")
                self.reply(200, {"status": "shutting down"})
                daemon.stop()
            else:
                self.reply(404, {"error": "not found", "path": self.path})

        def log_message(self, format: str, *args: Any) -> None:
            log(format % args)

    return Handler


def claim_runtime_dir() -> str | None:
    """Write a pid file into $RUNTIME_DIRECTORY; return an error message on failure."""
    runtime = os.environ.get("RUNTIME_DIRECTORY")
    if runtime is None:
        return None
    # systemd joins several RuntimeDirectory= entries with ':'; lemond uses the first.
    first = Path(runtime.split(":")[0])
    try:
        (first / "lemond.pid").write_text(f"{os.getpid()}\n", encoding="utf-8")
    except OSError as exc:
        return f"runtime directory {first} is not writable: {exc}"
    return None


def serve(cache_dir: Path) -> int:
    if FAIL_AT_START:
        log("error: FAIL_AT_START is baked in; refusing to start")
        return 1
    runtime_error = claim_runtime_dir()
    if runtime_error is not None:
        log(f"error: {runtime_error}")
        return 1
    defaults = load_defaults()
    config = load_config(cache_dir, defaults)
    effective = deep_merge(defaults, config)
    host = str(effective.get("host", DEFAULT_HOST))
    port = int(effective.get("port", DEFAULT_PORT))
    bind_host = "127.0.0.1" if host == "localhost" else host

    daemon = Daemon(cache_dir, config, effective)
    try:
        server = ThreadingHTTPServer((bind_host, port), make_handler(daemon))
    except OSError as exc:
        log(f"error: cannot listen on {bind_host}:{port}: {exc}")
        return 1
    server.daemon_threads = True
    daemon.server = server

    def on_signal(signum: int, _frame: object) -> None:
        append_line(cache_dir / "signals.log", signal.Signals(signum).name)
        daemon.stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    state = {
        "pid": os.getpid(),
        "uid": os.getuid(),
        "gid": os.getgid(),
        "euid": os.geteuid(),
        "version": VERSION,
        "argv": sys.argv,
        "llamacpp_args": daemon.llamacpp_args(),
        "config": config,
        "host": host,
        "port": server.server_address[1],
        "started_at": time.time(),
        "env": {name: os.environ.get(name) for name in ("RUNTIME_DIRECTORY", "HF_HOME")},
    }
    write_json_atomic(cache_dir / STATE_FILE, state)
    log(f"listening on {bind_host}:{server.server_address[1]}")
    try:
        server.serve_forever(poll_interval=0.1)
    finally:
        server.server_close()
    log("stopped")
    return 0


def main(argv: list[str]) -> int:
    if argv[:1] == ["--version"]:
        print(VERSION)
        return 0
    if len(argv) > 1 or (argv and argv[0].startswith("-")):
        log(f"usage: lemond [CACHE_DIR] (got {argv})")
        return 2
    cache_dir = Path(argv[0]) if argv else Path.home() / ".cache" / "lemonade"
    cache_dir.mkdir(parents=True, exist_ok=True)
    return serve(cache_dir)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
