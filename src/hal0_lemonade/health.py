"""Polling lemond's health endpoint, fast enough to notice it within a few tens of ms."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable
from typing import Any

HEALTH_PATH = "/api/v1/health"


MAX_ANSWER = 64 * 1024  # lemond's answer is ~0.3-1 kB; the daemon chooses it, so it is capped


def get_health(host: str, port: int, *, timeout: float = 1.0) -> dict[str, Any] | None:
    """One GET of the health endpoint; None when nothing healthy answers.

    The answer comes from a process running as hal0, so ``timeout`` bounds the whole
    exchange (a server sending a byte a second cannot hold it) and the answer is capped at
    :data:`MAX_ANSWER`.  HTTP/1.1 over a plain socket (none of http.client's imports on the
    install's path), read up to the announced length, and then *we* close: were the server
    to close first, every poll would leave a TIME_WAIT socket on lemond's own port.
    """
    deadline = time.monotonic() + timeout
    request = f"GET {HEALTH_PATH} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode()
    received = bytearray()
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(request)
            while len(received) <= MAX_ANSWER and not _complete(received):
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                sock.settimeout(left)
                chunk = sock.recv(16384)
                if not chunk:
                    break
                received += chunk
    except OSError:
        return None
    return _parse_answer(bytes(received))


def _split(raw: bytes) -> tuple[bytes, dict[bytes, bytes], bytes] | None:
    """(status line, headers by lower-case name, body so far); None until the head is in."""
    head, sep, body = raw.partition(b"\r\n\r\n")
    if not sep:
        return None
    status, *lines = head.split(b"\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip()
    return status, headers, body


def _complete(raw: bytearray) -> bool:
    """The whole answer is in: its Content-Length of body, or a chunked body's last chunk."""
    parts = _split(bytes(raw))
    if parts is None:
        return False
    _, headers, body = parts
    length = headers.get(b"content-length", b"")
    if length.isdigit():
        return len(body) >= int(length)
    return headers.get(b"transfer-encoding", b"").lower() == b"chunked" and body.endswith(
        b"0\r\n\r\n"
    )


def _dechunk(body: bytes) -> bytes:
    out = bytearray()
    while body:
        size_line, _, rest = body.partition(b"\r\n")
        size = int(size_line.split(b";")[0] or b"0", 16)
        if size == 0:
            break
        out += rest[:size]
        body = rest[size + 2 :]
    return bytes(out)


def _parse_answer(raw: bytes) -> dict[str, Any] | None:
    parts = _split(raw) if len(raw) <= MAX_ANSWER else None
    if parts is None:
        return None
    status, headers, body = parts
    code = status.split()
    if len(code) < 2 or code[1] != b"200":
        return None
    try:
        if headers.get(b"transfer-encoding", b"").lower() == b"chunked":
            body = _dechunk(body)
        data = json.loads(body or b"{}")
    except (ValueError, RecursionError):
        return None
    return data if isinstance(data, dict) else {"status": "ok"}


def port_in_use(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def wait_healthy(
    host: str,
    port: int,
    *,
    timeout: float,
    still_running: Callable[[], str | None] | None = None,
) -> dict[str, Any] | None:
    """Poll until healthy or ``timeout``; ``still_running`` returns a reason to give up early."""
    deadline = time.monotonic() + timeout
    interval = 0.01
    next_check = time.monotonic() + 0.25
    while True:
        answer = get_health(host, port, timeout=min(1.0, timeout))
        if answer is not None:
            return answer
        now = time.monotonic()
        if now >= deadline:
            return None
        if still_running is not None and now >= next_check:
            if still_running() is not None:
                return None
            next_check = now + 0.25
        time.sleep(min(interval, max(0.0, deadline - now)))
        interval = min(interval * 1.5, 0.05)
