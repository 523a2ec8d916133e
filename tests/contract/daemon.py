"""Running a lemond (the stand-in or a real one) and looking at it from outside.

Only what any process shows: exit code, stdout/stderr, files, HTTP answers, and the sockets
/proc lists for its file descriptors.  Nothing here knows which kind of lemond it runs.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Generous: CI has 2 cores, and 11.x takes up to ~6 s to stop after SIGTERM.
START_TIMEOUT_S = 20.0
EXIT_TIMEOUT_S = 30.0
ANY_ADDRESS = "0.0.0.0"  # noqa: S104 - compared with, never bound


@dataclass(frozen=True)
class Lemond:
    """One daemon under test: ``kind`` is "standin" or "real"."""

    kind: str
    version: str
    path: Path

    @property
    def major(self) -> int:
        return int(self.version.split(".", 1)[0])

    @property
    def v11(self) -> bool:
        return self.major >= 11

    @property
    def defaults_file(self) -> Path:
        return self.path.parent / "resources" / "defaults.json"

    def defaults(self) -> dict[str, Any]:
        loaded: dict[str, Any] = json.loads(self.defaults_file.read_text(encoding="utf-8"))
        return loaded

    def __str__(self) -> str:
        return f"{self.kind} lemond {self.version}"


@dataclass(frozen=True)
class Sock:
    proto: str  # tcp, udp, tcp6, udp6
    address: str
    port: int
    listening: bool  # TCP LISTEN; always False for UDP


def _decode_address(hex_address: str) -> str:
    raw = bytes.fromhex(hex_address)
    if len(raw) == 4:
        return socket.inet_ntop(socket.AF_INET, raw[::-1])
    # /proc prints IPv6 as four host-order 32-bit words.
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))
    return socket.inet_ntop(socket.AF_INET6, words)


def sockets_of(pid: int) -> list[Sock]:
    """The sockets process ``pid`` holds (its fds' inodes matched in /proc/<pid>/net/*)."""
    inodes: set[str] = set()
    with contextlib.suppress(FileNotFoundError):
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(OSError):
                target = str(fd.readlink())
                if target.startswith("socket:["):
                    inodes.add(target[len("socket:[") : -1])
    found: list[Sock] = []
    for proto in ("tcp", "tcp6", "udp", "udp6"):
        try:
            lines = Path(f"/proc/{pid}/net/{proto}").read_text().splitlines()[1:]
        except FileNotFoundError:
            continue
        for line in lines:
            fields = line.split()
            if fields[9] not in inodes:
                continue
            address, port = fields[1].split(":")
            listening = proto.startswith("tcp") and fields[3] == "0A"
            found.append(Sock(proto, _decode_address(address), int(port, 16), listening))
    return found


def port_bindable(host: str, port: int, *, reuse_port: bool = False) -> bool:
    """Whether ``host:port`` can be bound now: plainly (lemond's WebSocket port probe), or
    with SO_REUSEPORT (how lemond binds its HTTP port)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        if reuse_port:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def first_bindable_port(start: int, host: str = "127.0.0.1") -> int:
    return next(port for port in range(start, 65536) if port_bindable(host, port))


@contextlib.contextmanager
def held_port(host: str, port: int, *, listen: bool = True) -> Iterator[socket.socket]:
    """Hold ``host:port`` (listening but never accepting, or only bound) for the block."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        if listen:
            sock.listen(1)
        yield sock


def wait_until(what: str, predicate: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.05)


@dataclass
class Answer:
    status: int
    body: Any
    seconds: float


def http_request(
    host: str, port: int, method: str, path: str, *, body: bytes | None, timeout: float
) -> Answer:
    """One request on a fresh connection.  ``body=None`` sends no Content-Length at all
    (what `curl -X POST URL` does); urllib would add "Content-Length: 0" to a POST."""
    began = time.monotonic()
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.putrequest(method, path)
        if body is not None:
            conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        response = conn.getresponse()
        data = response.read()
    finally:
        conn.close()
    parsed = json.loads(data) if data else None
    return Answer(response.status, parsed, time.monotonic() - began)


@dataclass
class Running:
    """A started lemond with its own cache dir, runtime dir, HOME and port."""

    lemond: Lemond
    proc: subprocess.Popen[bytes]
    cache: Path
    host: str
    port: int
    stdout: Path
    stderr: Path
    env: Mapping[str, str] = field(repr=False)

    @property
    def config_file(self) -> Path:
        return self.cache / "config.json"

    def output(self) -> str:
        return self.stdout.read_text(errors="replace") + self.stderr.read_text(errors="replace")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def request(
        self, method: str, path: str, body: bytes | None = b"", timeout: float = 10
    ) -> Answer:
        return http_request(self.host, self.port, method, path, body=body, timeout=timeout)

    def get(self, path: str) -> Answer:
        return self.request("GET", path, None)

    def wait_healthy(self, timeout: float = START_TIMEOUT_S) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        last: object = None
        while time.monotonic() < deadline:
            if not self.alive():
                raise AssertionError(
                    f"{self.lemond} exited {self.proc.returncode} before it answered health\n"
                    f"--- output\n{self.output()}"
                )
            try:
                answer = self.get("/api/v1/health")
            except OSError as exc:
                last = exc
            else:
                if answer.status == 200 and isinstance(answer.body, dict):
                    return answer.body
                last = answer
            time.sleep(0.05)
        raise AssertionError(
            f"{self.lemond} did not answer health on {self.host}:{self.port} within "
            f"{timeout:g} s: {last}\n--- output\n{self.output()}"
        )

    def wait_exit(self, timeout: float = EXIT_TIMEOUT_S) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"{self.lemond} still runs {timeout:g} s later\n--- output\n{self.output()}"
            ) from None

    def wait_output(self, text: str, timeout: float = START_TIMEOUT_S) -> None:
        """Wait for ``text`` in the daemon's output; a daemon that exits first, or a wait that
        times out, fails with what the daemon did instead (exit status, sockets, output)."""
        deadline = time.monotonic() + timeout
        while text not in self.output():
            if not self.alive() and text not in self.output():
                state = f"exited {self.proc.returncode}"
                break
            if time.monotonic() > deadline:
                state = f"still runs after {timeout:g} s, holding {self.sockets()}"
                break
            time.sleep(0.05)
        else:
            return
        raise AssertionError(
            f"{text!r} never appeared in the output of {self.lemond}, which {state}\n"
            f"--- output\n{self.output()}"
        )

    def sockets(self) -> list[Sock]:
        return sockets_of(self.proc.pid)

    def udp_on_any(self) -> list[Sock]:
        """UDP sockets bound to 0.0.0.0: lemond's discovery beacon."""
        return [s for s in self.sockets() if s.proto == "udp" and s.address == ANY_ADDRESS]

    def kill(self) -> None:
        if self.alive():
            self.proc.send_signal(signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(10)
