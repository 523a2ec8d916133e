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
    :data:`MAX_ANSWER`.  A plain HTTP/1.0 request over a socket: no keep-alive, no chunked
    body to decode, and none of http.client's imports on the install's path.
    """
    deadline = time.monotonic() + timeout
    request = f"GET {HEALTH_PATH} HTTP/1.0\r\nHost: {host}:{port}\r\n\r\n".encode()
    received = bytearray()
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(request)
            while len(received) <= MAX_ANSWER:
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


def _parse_answer(raw: bytes) -> dict[str, Any] | None:
    if len(raw) > MAX_ANSWER:
        return None
    head, sep, body = raw.partition(b"\r\n\r\n")
    status = head.split(b"\r\n", 1)[0].split()
    if not sep or len(status) < 2 or status[1] != b"200":
        return None
    try:
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
