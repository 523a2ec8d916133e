#!/usr/bin/env python3
"""A stand-in for AMD's Lemonade Server daemon ``lemond``, for tests.

It copies what the real 10.6.0 and 11.7.0 daemons were measured to do (tests/contract runs the
same assertions against both, see tests/contract/README.md), keyed on the major version of
the baked VERSION: below 11 it acts as 10.x, from 11 on as 11.x.  That covers the command line
(CLI11's exit codes), resources/defaults.json beside the binary, config.json (written when
missing, renamed ``.corrupted`` when unparseable, migrated to config_version 2 by 11.x), the
log file's place, the health JSON, the WebSocket listener from port 9000, the UDP discovery
beacon, a busy HTTP port, ``POST /internal/shutdown`` and the signals.

What it adds for tests (the real daemon has none of it):
- ``fake-lemond.state.json``, ``shutdown-requests.log`` and ``signals.log`` in CACHE_DIR;
- ``pid``, ``uid``, ``llamacpp_args`` and ``config`` in the health JSON;
- the sandbox probes ``GET /test/write?path=`` and ``/test/open?path=``;
- ``FAIL_AT_START``: a release whose lemond exits 1 at start.
What it leaves out: models, backends and the WebSocket protocol (the listener accepts and
closes), and its beacon only ever goes to loopback.

Stdlib only: it must run on a bare Debian 12 ``python3``.

Baking scheme: the archive builder (tests/support/archives.py) rewrites every line
that ends in the marker comment ``# @bake:<NAME>`` and starts with ``<NAME> = ``,
replacing the value with ``repr()`` of the baked value. The template stays valid,
runnable Python with the unbaked defaults below, and the builder fails loudly if
a marked line is missing, so a renamed constant cannot silently stay unbaked.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import select
import signal
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import parse_qs, urlsplit

VERSION = "0.0.0+unbaked"  # @bake:VERSION
FAIL_AT_START = False  # @bake:FAIL_AT_START


def _major(version: str) -> int:
    try:
        return int(version.split(".", 1)[0])
    except ValueError:
        return 0


# 11.x changed enough (config migration, runtime directory, shutdown, busy port) that the
# stand-in branches on it; anything older behaves like 10.6.0.
V11 = _major(VERSION) >= 11

STATE_FILE = "fake-lemond.state.json"
HEALTH_PATHS = frozenset({"/api/v1/health", "/api/v0/health", "/v1/health"})
WEBSOCKET_FIRST_PORT = 9000
BEACON_PORT = 13305  # lemond sends its discovery beacon here, whatever its HTTP port
BEACON_INTERVAL_S = 2.0
BODY_WAIT_S = 5.0  # cpp-httplib's read timeout: how long 10.x waits for a length-less body
MODEL_TYPES_10 = ("embedding", "image", "llm", "reranking", "transcription", "tts")
MODEL_TYPES_11 = ("classification", *MODEL_TYPES_10)

# Exit codes of CLI11, the real lemond's argument parser.
EXIT_EXTRAS = 109
EXIT_CONVERSION = 104
EXIT_REQUIRED = 114

# 10.x folds these into a config.json it creates (never into an existing one); 11.x has
# dropped this.  (environment variable, section or None, key)
ENV_SETTINGS: tuple[tuple[str, str | None, str], ...] = (
    ("LEMONADE_PORT", None, "port"),
    ("LEMONADE_HOST", None, "host"),
    ("LEMONADE_LOG_LEVEL", None, "log_level"),
    ("LEMONADE_GLOBAL_TIMEOUT", None, "global_timeout"),
    ("LEMONADE_MAX_LOADED_MODELS", None, "max_loaded_models"),
    ("LEMONADE_NO_BROADCAST", None, "no_broadcast"),
    ("LEMONADE_EXTRA_MODELS_DIR", None, "extra_models_dir"),
    ("LEMONADE_CTX_SIZE", None, "ctx_size"),
    ("LEMONADE_OFFLINE", None, "offline"),
    ("LEMONADE_DISABLE_MODEL_FILTERING", None, "disable_model_filtering"),
    ("LEMONADE_ENABLE_DGPU_GTT", None, "enable_dgpu_gtt"),
    ("LEMONADE_LLAMACPP", "llamacpp", "backend"),
    ("LEMONADE_LLAMACPP_ARGS", "llamacpp", "args"),
    ("LEMONADE_LLAMACPP_PREFER_SYSTEM", "llamacpp", "prefer_system"),
    ("LEMONADE_LLAMACPP_ROCM_BIN", "llamacpp", "rocm_bin"),
    ("LEMONADE_LLAMACPP_VULKAN_BIN", "llamacpp", "vulkan_bin"),
    ("LEMONADE_LLAMACPP_CPU_BIN", "llamacpp", "cpu_bin"),
    ("LEMONADE_WHISPERCPP", "whispercpp", "backend"),
    ("LEMONADE_WHISPERCPP_ARGS", "whispercpp", "args"),
    ("LEMONADE_WHISPERCPP_CPU_BIN", "whispercpp", "cpu_bin"),
    ("LEMONADE_WHISPERCPP_NPU_BIN", "whispercpp", "npu_bin"),
    ("LEMONADE_SDCPP", "sdcpp", "backend"),
    ("LEMONADE_STEPS", "sdcpp", "steps"),
    ("LEMONADE_CFG_SCALE", "sdcpp", "cfg_scale"),
    ("LEMONADE_WIDTH", "sdcpp", "width"),
    ("LEMONADE_HEIGHT", "sdcpp", "height"),
    ("LEMONADE_SDCPP_CPU_BIN", "sdcpp", "cpu_bin"),
    ("LEMONADE_SDCPP_ROCM_BIN", "sdcpp", "rocm_bin"),
    ("LEMONADE_SDCPP_VULKAN_BIN", "sdcpp", "vulkan_bin"),
    ("LEMONADE_FLM_ARGS", "flm", "args"),
    ("LEMONADE_RYZENAI_SERVER_BIN", "ryzenai", "server_bin"),
    ("LEMONADE_KOKORO_CPU_BIN", "kokoro", "cpu_bin"),
)


class StartError(Exception):
    """lemond logs ``[Error] (main) Error: <message>`` and exits 1."""


# --- logging ---------------------------------------------------------------------------------


class Log:
    """lemond's log: ``<date time.ms> [Level] (Component) message`` on stdout and in a file."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.file: TextIO | None = None

    def open(self, path: Path) -> None:
        # Appended to, like lemond's: several runs share /tmp/lemonade-server.log.
        try:
            self.file = path.open("a", encoding="utf-8")
        except OSError as exc:
            self.write("Warn", "main", f"cannot open log file {path}: {exc}")

    def raw(self, text: str) -> None:
        with self.lock:
            print(text, flush=True)
            if self.file is not None:
                self.file.write(text + "\n")
                self.file.flush()

    def write(self, level: str, component: str, message: str) -> None:
        stamp = datetime.datetime.now().strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
        self.raw(f"{stamp} [{level}] ({component}) {message}")


LOG = Log()


def append_line(path: Path, text: str) -> None:
    # Best effort: the evidence files are for tests, never a reason to crash.
    try:
        with path.open("a", encoding="utf-8") as fh:
            fh.write(f"{time.time():.6f} {text}\n")
    except OSError as exc:
        LOG.write("Warn", "fake", f"cannot append to {path}: {exc}")


def write_json_atomic(path: Path, data: object) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    tmp.replace(path)


# --- command line (CLI11's behaviour) --------------------------------------------------------


@dataclass
class Args:
    cache_dir: Path
    port: int | None = None
    host: str | None = None
    broadcast: bool | None = None  # 11.x only


def help_text() -> str:
    home = os.environ.get("HOME")
    cache_default = f"{home}/.cache/lemonade" if home else ".cache/lemonade"
    lines = [
        "lemond - Lightweight LLM server",
        f"Usage: {sys.argv[0]} [OPTIONS] [cache_dir]",
        "",
        "Positionals:",
        f"  cache_dir DIR [{cache_default}] ",
        "                              Lemonade cache directory containing config.json and "
        "model data",
        "",
        "Options:",
        "  -h,--help                   Print this help message and exit",
        "  -v,--version                Display program version information and exit",
        "  --port PORT                 Port number to serve on (overrides config.json)",
        "  --host HOST                 Address to bind for connections (overrides config.json)",
    ]
    if V11:
        lines += [
            "  --broadcast,--no-broadcast{false}",
            "                              Enable or disable UDP broadcasting for server discovery",
        ]
    return "\n".join(lines) + "\n"


class UsageError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


def _early_flag(argv: list[str]) -> str | None:
    """CLI11 acts on -h/-v while parsing, before it complains about anything else."""
    for arg in argv:
        if arg in ("-h", "--help") or arg.startswith("--help="):
            return "help"
        if arg in ("-v", "--version") or arg.startswith("--version="):
            return "version"
        if arg.startswith("-") and not arg.startswith("--") and len(arg) > 2:
            first = arg[1]  # combined short flags: -vh is -v first
            if first in "hv":
                return "help" if first == "h" else "version"
    return None


def parse_args(argv: list[str]) -> Args:
    options: dict[str, str] = {}
    broadcast: bool | None = None
    extras: list[str] = []
    positionals: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        i += 1
        name, eq, inline = arg.partition("=")
        if name in ("--port", "--host"):
            if eq:
                value = inline
            elif i < len(argv):
                value = argv[i]
                i += 1
            else:
                label = name[2:].upper()
                raise UsageError(EXIT_REQUIRED, f"{name}: 1 required {label} missing")
            options[name] = value
        elif V11 and arg in ("--broadcast", "--no-broadcast"):
            broadcast = arg == "--broadcast"
        elif arg.startswith("-") and arg != "-":
            extras.append(arg)
        else:
            positionals.append(arg)
    extras.extend(positionals[1:])
    if extras:
        # CLI11 lists them last-first.
        if len(extras) == 1:
            raise UsageError(EXIT_EXTRAS, f"The following argument was not expected: {extras[0]}")
        listed = " ".join(reversed(extras))
        raise UsageError(EXIT_EXTRAS, f"The following arguments were not expected: {listed}")
    port: int | None = None
    if "--port" in options:
        try:
            port = int(options["--port"])
        except ValueError:
            raise UsageError(
                EXIT_CONVERSION, f"Could not convert: --port = {options['--port']}"
            ) from None
    cache = Path(positionals[0]) if positionals else Path.home() / ".cache" / "lemonade"
    return Args(cache, port, options.get("--host"), broadcast)


# --- settings --------------------------------------------------------------------------------


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def dump_config(config: object) -> str:
    # Byte for byte what lemond (nlohmann::json dump(2), std::map keys) writes.
    return json.dumps(config, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def save_config(cache_dir: Path, config: object) -> None:
    # lemond's own way: config.json.tmp, then a rename.
    tmp = cache_dir / "config.json.tmp"
    tmp.write_text(dump_config(config), encoding="utf-8")
    tmp.replace(cache_dir / "config.json")


def load_defaults() -> dict[str, Any]:
    # Like lemond: resources/defaults.json beside the (resolved) binary, or no start at all.
    path = Path(sys.argv[0]).resolve().parent / "resources" / "defaults.json"
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        raise StartError(f"Failed to open {path}") from None
    try:
        loaded = json.loads(text)
    except ValueError as exc:
        raise StartError(f"Failed to parse {path}: {exc}") from None
    if not isinstance(loaded, dict):
        raise StartError(f"Failed to parse {path}: not a JSON object")
    return loaded


def _env_value(text: str, default: object) -> object:
    """An environment string as the type of the default it replaces (10.x's rule)."""
    if isinstance(default, bool):
        return text.lower() in ("1", "true", "yes")
    if isinstance(default, int):
        try:
            return int(text)
        except ValueError:
            return default
    if isinstance(default, float):
        try:
            return float(text)
        except ValueError:
            return default
    return text


def env_overlay(defaults: dict[str, Any]) -> dict[str, Any]:
    overlay: dict[str, Any] = {}
    for name, section, key in ENV_SETTINGS:
        text = os.environ.get(name, "")
        if not text:
            continue
        if section is None:
            overlay[key] = _env_value(text, defaults.get(key))
        else:
            nested = defaults.get(section)
            default = nested.get(key) if isinstance(nested, dict) else None
            overlay.setdefault(section, {})[key] = _env_value(text, default)
    names = [name for name, _, _ in ENV_SETTINGS if os.environ.get(name)]
    if names:
        joined = ", ".join(names)
        print(f"Migrated config.json from environment variables: {joined}", file=sys.stderr)
    return overlay


JSON_TYPE_NAMES = {list: "array", str: "string", bool: "boolean", type(None): "null"}


def _type_name(value: object) -> str:
    return JSON_TYPE_NAMES.get(type(value), "number")


def migrate_v2(config: dict[str, Any]) -> bool:
    """11.x's in-place migration of config.json; True when it changed anything.

    Measured on the real 11.7.0: ``no_broadcast`` (at any config_version) is dropped, and
    becomes ``broadcast = not no_broadcast`` unless ``broadcast`` is already set; a file
    below config_version 2 (or without one) gets config_version 2 and, if its ``ctx_size``
    is exactly the integer 4096 (10.x's default), ``ctx_size`` -1.  Everything else is kept.
    """
    changed = False
    if "no_broadcast" in config:
        no_broadcast = config.pop("no_broadcast")
        if not isinstance(no_broadcast, bool):
            raise StartError("'no_broadcast' must be a boolean")
        config.setdefault("broadcast", not no_broadcast)
        note = f"no_broadcast={json.dumps(no_broadcast)} -> broadcast="
        LOG.write("Info", "load", f"Migrating config: {note}{json.dumps(config['broadcast'])}")
        changed = True
    version = config.get("config_version")
    if not isinstance(version, int) or version < 2:
        ctx = config.get("ctx_size")
        if type(ctx) is int and ctx == 4096:
            config["ctx_size"] = -1
            LOG.write("Info", "load", "Migrating config: ctx_size 4096 -> -1 (auto-tune enabled)")
        config["config_version"] = 2
        changed = True
    return changed


def load_config(cache_dir: Path, defaults: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """Return (config.json's settings after migration, whether the file needs writing)."""
    config_file = cache_dir / "config.json"
    with contextlib.suppress(OSError):
        (cache_dir / "config.json.tmp").unlink()  # left by an interrupted save
    try:
        text = config_file.read_text(encoding="utf-8")
    except FileNotFoundError:
        return ({} if V11 else env_overlay(defaults)), True
    try:
        parsed = json.loads(text)
    except ValueError as exc:
        LOG.write("Warn", "load", f"Failed to parse {config_file}: {exc}")
        backup = cache_dir / "config.json.corrupted"
        try:
            config_file.replace(backup)
            LOG.write("Warn", "load", f"  Renamed to {backup}")
        except OSError as err:
            LOG.write("Warn", "load", f"  cannot rename: {err}")
        LOG.write("Warn", "load", "  Using defaults.")
        return {}, True
    if not isinstance(parsed, dict):
        # Valid JSON that is no object stops lemond (an uncaught nlohmann type_error); 11.x
        # first turns a `null` into {"config_version": 2} on disk.
        if V11 and parsed is None:
            save_config(cache_dir, {"config_version": 2})
            raise StartError("[json.exception.type_error.302] type must be string, but is number")
        raise StartError(
            "[json.exception.type_error.305] cannot use operator[] with a string argument "
            f"with {_type_name(parsed)}"
        )
    return parsed, V11 and migrate_v2(parsed)


def runtime_log_file() -> Path:
    """Where lemond logs: 10.x $XDG_RUNTIME_DIR/lemonade/ or /tmp; 11.x needs a runtime dir."""
    xdg = os.environ.get("XDG_RUNTIME_DIR", "")
    if xdg and _writable_dir(Path(xdg)):
        directory = Path(xdg) / "lemonade"
        directory.mkdir(exist_ok=True)
        return directory / "lemonade-server.log"
    if not V11:
        return Path("/tmp/lemonade-server.log")  # noqa: S108 - lemond's own fixed fallback
    # 11.x takes RUNTIME_DIRECTORY whole: a systemd list "a:b" is no directory, so no start.
    runtime = os.environ.get("RUNTIME_DIRECTORY", "")
    if runtime and _writable_dir(Path(runtime)):
        return Path(runtime) / "lemonade-server.log"
    raise StartError(
        "Unable to resolve writable runtime directory from XDG_RUNTIME_DIR or RUNTIME_DIRECTORY"
    )


def _writable_dir(path: Path) -> bool:
    return path.is_dir() and os.access(path, os.W_OK | os.X_OK)


# --- sandbox probes (stand-in only) ----------------------------------------------------------


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


# --- the daemon ------------------------------------------------------------------------------


@dataclass
class Daemon:
    cache_dir: Path
    config: dict[str, Any]  # config.json's settings (after an 11.x migration)
    effective: dict[str, Any]  # defaults <- config.json <- command line
    host: str
    port: int
    stopping: threading.Event  # set by a signal or POST /internal/shutdown
    server: HTTPServer | None = None
    websocket: socket.socket | None = None
    beacon: socket.socket | None = None

    @property
    def bind_host(self) -> str:
        return "127.0.0.1" if self.host == "localhost" else self.host

    @property
    def websocket_port(self) -> int | None:
        return self.websocket.getsockname()[1] if self.websocket is not None else None

    def llamacpp_args(self) -> str:
        section = self.effective.get("llamacpp")
        return str(section.get("args", "")) if isinstance(section, dict) else ""

    def broadcasts(self, flag: bool | None) -> bool:
        if V11:
            return flag if flag is not None else self.effective.get("broadcast") is not False
        return self.effective.get("no_broadcast") is not True

    def health(self) -> dict[str, Any]:
        limit = self.effective.get("max_loaded_models", 1)
        types = MODEL_TYPES_11 if V11 else MODEL_TYPES_10
        body: dict[str, Any] = {
            "all_models_loaded": [],
            "max_models": dict.fromkeys(types, limit),
            "model_loaded": None,
            "status": "ok",
            "version": VERSION,
        }
        if self.websocket_port is not None:  # absent when the listener could not start
            body["websocket_port"] = self.websocket_port
        if V11:
            body["pinned_helper_models"] = dict.fromkeys(types, 0)
            body["pinned_models"] = dict.fromkeys(types, 0)
            body["telemetry"] = self.telemetry()
            body["update_check_done"] = True
        # Stand-in extras the e2e suite reads.
        body.update(
            pid=os.getpid(),
            uid=os.getuid(),
            llamacpp_args=self.llamacpp_args(),
            config=self.config,
        )
        return body

    def telemetry(self) -> dict[str, Any]:
        section = self.effective.get("telemetry")
        settings = section if isinstance(section, dict) else {}
        enabled = settings.get("enabled") is True
        if not enabled:
            return {"enabled": False}
        # Seen once with every hide_* false: all three captured; hide_* dropping one is a guess.
        kinds = ("inputs", "outputs", "thinking")
        return {"captures": [k for k in kinds if not settings.get(f"hide_{k}")], "enabled": True}

    def start_websocket(self) -> None:
        configured = self.effective.get("websocket_port", "auto")
        if isinstance(configured, int) and not isinstance(configured, bool):
            port = configured
        else:
            port = first_free_port(WEBSOCKET_FIRST_PORT)
        LOG.write("Info", "WebSocket", f"Configured port: {port}")
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind((self.bind_host, port))
            listener.listen(16)
        except OSError:
            listener.close()
            LOG.write("Error", "WebSocket", f"Failed to create context on port {port}")
            LOG.write("Warn", "Server", "Failed to start WebSocket server")
            return
        self.websocket = listener
        threading.Thread(target=self._accept_websocket, daemon=True).start()
        LOG.write("Info", "Server", f"WebSocket server started on port {port}")

    def _accept_websocket(self) -> None:
        # No WebSocket protocol: the listener only has to exist on the right port.
        listener = self.websocket
        while listener is not None and not self.stopping.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            conn.close()

    def start_beacon(self) -> None:
        beacon = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        beacon.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        beacon.bind(("0.0.0.0", 0))  # noqa: S104 - what lemond binds; it only sends
        self.beacon = beacon
        LOG.raw("[Server] [Net Broadcast] Broadcasting on 1 interface(s): 127.0.0.1")
        threading.Thread(target=self._send_beacons, daemon=True).start()

    def _send_beacons(self) -> None:
        # lemond's payload, every 2 s, to each private interface; the stand-in stays on loopback.
        payload = json.dumps(
            {
                "service": "lemonade",
                "hostname": socket.gethostname(),
                "url": f"http://127.0.0.1:{self.port}/api/v1/",
            }
        ).encode()
        while self.beacon is not None and not self.stopping.is_set():
            with contextlib.suppress(OSError):
                self.beacon.sendto(payload, ("127.0.0.1", BEACON_PORT))
            self.stopping.wait(BEACON_INTERVAL_S)

    def start_http(self) -> bool:
        """Listen; False when the port cannot be bound."""
        where = f"{self.bind_host}:{self.port}"
        LOG.write("Info", "Server", f"Binding IPv4 HTTP server to {where}...")
        try:
            server = HTTPServer((self.bind_host, self.port), make_handler(self))
        except OSError:
            LOG.write("Error", "Server", f"Failed to bind IPv4 HTTP server to {where}")
            return False
        self.server = server
        threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True
        ).start()
        LOG.write("Info", "Server", f"IPv4 HTTP server listening on {where}")
        return True

    def stop(self) -> None:
        self.stopping.set()

    def cleanup(self) -> None:
        LOG.write("Info", "Server", "Shutdown requested, stopping server...")
        LOG.write("Info", "Server", "Stopping HTTP server...")
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
        LOG.write("Info", "Server", "Stopping WebSocket server...")
        for sock in (self.websocket, self.beacon):
            if sock is not None:
                sock.close()
        LOG.write("Info", "Server", "Cleanup complete")


def first_free_port(start: int) -> int:
    """lemond's "auto" WebSocket port: the first one from ``start`` it can bind on 127.0.0.1.

    Measured (strace): a plain bind() on 127.0.0.1, whatever host lemond then listens on; so a
    port held on 127.0.0.1 is skipped, and one held only on another address is not.
    """
    for port in range(start, 65536):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise StartError(f"no free WebSocket port from {start}")


class HTTPServer(ThreadingHTTPServer):
    """Bound as cpp-httplib binds: SO_REUSEPORT and no SO_REUSEADDR (strace of both releases).

    So two lemonds of one user share a port (10.x runs both; 11.x's own check stops the
    second), and a socket of someone else's on it makes the bind fail.
    """

    allow_reuse_address = False
    daemon_threads = True

    def server_bind(self) -> None:
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        super().server_bind()


def make_handler(daemon: Daemon) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "fake-lemond"
        protocol_version = "HTTP/1.1"

        def reply(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body, separators=(",", ":"), sort_keys=True).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(data)
            self.close_connection = True

        def not_found(self, path: str) -> None:
            message = "The requested endpoint does not exist"
            self.reply(404, {"error": {"message": message, "path": path, "type": "not_found"}})

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
            elif url.path == "/live":
                self.reply(200, {"status": "ok"})
            elif url.path == "/test/write":
                self.probe(url.query, probe_write)
            elif url.path == "/test/open":
                self.probe(url.query, probe_open)
            else:
                self.not_found(url.path)

        def read_body(self) -> bool:
            """Consume the body; False when 10.x would give up waiting for it."""
            length = self.headers.get("Content-Length")
            if length is not None:
                self.rfile.read(int(length))
                return True
            if self.headers.get("Transfer-Encoding") is not None or V11:
                return True
            # No length: 10.x (cpp-httplib) reads until the client closes, for at most 5 s.
            deadline = time.monotonic() + BODY_WAIT_S
            while (left := deadline - time.monotonic()) > 0:
                ready, _, _ = select.select([self.connection], [], [], left)
                if ready and not self.connection.recv(65536):
                    return True
            return False

        def do_POST(self) -> None:
            path = urlsplit(self.path).path
            if path != "/internal/shutdown":
                self.not_found(path)
                return
            if not self.read_body():
                append_line(daemon.cache_dir / "shutdown-requests.log", f"POST {path} 400")
                self.reply(400, {"error": {"message": "Bad request", "type": "bad_request"}})
                return
            append_line(daemon.cache_dir / "shutdown-requests.log", f"POST {path} 200")
            self.reply(200, {"status": "shutting down"})
            daemon.stop()

        def log_message(self, format: str, *args: Any) -> None:
            pass  # lemond does not log requests at level info

    return Handler


def start(args: Args, stopping: threading.Event) -> Daemon:
    if FAIL_AT_START:
        raise StartError("FAIL_AT_START is baked into this stand-in; refusing to start")
    defaults = load_defaults()
    args.cache_dir.mkdir(parents=True, exist_ok=True)
    config, write = load_config(args.cache_dir, defaults)
    effective = deep_merge(defaults, config)
    if args.port is not None or args.host is not None:
        # The flags win over config.json and are saved into it, with the defaults merged in.
        if args.port is not None:
            effective["port"] = args.port
        if args.host is not None:
            effective["host"] = args.host
        config, write = effective, True
    if write:
        # A missing, unparseable or migrated file is written in full, defaults merged in.
        save_config(args.cache_dir, deep_merge(defaults, config))
    log_file = runtime_log_file()  # 11.x checks this only after config.json is settled
    LOG.open(log_file)
    host = str(effective.get("host", "localhost"))
    port = int(effective.get("port", 13305))
    LOG.write("Info", "main", "Starting Lemonade Server...")
    LOG.write("Info", "main", f"  Version: {VERSION}")
    LOG.write("Info", "main", f"  Cache dir: {args.cache_dir}")
    LOG.write("Info", "main", f"  Port: {port}")
    LOG.write("Info", "main", f"  Host: {host}")
    LOG.write("Info", "main", f"  Log level: {effective.get('log_level', 'info')}")
    (args.cache_dir / "bin").mkdir(exist_ok=True)
    daemon = Daemon(args.cache_dir, config, effective, host, port, stopping)
    if V11 and answers(daemon.bind_host, port):
        # 11.x first connects to its port and refuses to run beside whatever answers there.
        raise StartError(
            f"Port {port} on {daemon.bind_host} is already in use. Another Lemonade server "
            "(lemond) is likely already running on this port. This instance will now exit."
        )
    daemon.start_websocket()
    if daemon.broadcasts(args.broadcast):
        daemon.start_beacon()
    if not daemon.start_http() and V11:
        # 10.x runs on without HTTP; 11.x gives up.
        raise StartError(
            f"Could not start HTTP listeners for every address resolved for host "
            f"'{host}' (bind or listen failure). Server startup aborted."
        )
    write_state(daemon, log_file)
    return daemon


def answers(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.settimeout(1.0)
        return probe.connect_ex((host, port)) == 0


def write_state(daemon: Daemon, log_file: Path) -> None:
    state = {
        "pid": os.getpid(),
        "uid": os.getuid(),
        "gid": os.getgid(),
        "euid": os.geteuid(),
        "version": VERSION,
        "argv": sys.argv,
        "llamacpp_args": daemon.llamacpp_args(),
        "config": daemon.config,
        "host": daemon.host,
        "port": daemon.port,
        "http": daemon.server is not None,
        "websocket_port": daemon.websocket_port,
        "broadcast": daemon.beacon is not None,
        "log_file": str(log_file),
        "started_at": time.time(),
        "env": {name: os.environ.get(name) for name in ("RUNTIME_DIRECTORY", "HF_HOME")},
    }
    write_json_atomic(daemon.cache_dir / STATE_FILE, state)


def serve(args: Args) -> int:
    if V11 and not os.environ.get("HOME"):
        # 11.x resolves its data directories from HOME even when given a cache dir.
        print("Error: HOME is not set; cannot resolve Lemonade cache directory", file=sys.stderr)
        return 1
    received: list[str] = []
    stopping = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        received.append(signal.Signals(signum).name)
        stopping.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        daemon = start(args, stopping)
    except StartError as exc:
        LOG.write("Error", "main", f"Error: {exc}")
        return 1
    while not stopping.wait(0.2):
        pass
    for name in received:
        append_line(daemon.cache_dir / "signals.log", name)
        LOG.raw("Shutdown signal received, exiting...")
    daemon.cleanup()
    return 0


def main(argv: list[str]) -> int:
    early = _early_flag(argv)
    if early == "help":
        sys.stdout.write(help_text())
        return 0
    if early == "version":
        print(f"lemond version {VERSION}")
        return 0
    try:
        args = parse_args(argv)
    except UsageError as exc:
        print(f"{exc}\nRun with --help for more information.", file=sys.stderr)
        return exc.code
    return serve(args)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
