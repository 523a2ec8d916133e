"""Polling lemond's health endpoint, fast enough to notice it within a few tens of ms."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable
from typing import Any

HEALTH_PATH = "/api/v1/health"


def get_health(host: str, port: int, *, timeout: float = 1.0) -> dict[str, Any] | None:
    """One GET of the health endpoint; None when nothing healthy answers."""
    import http.client  # ~15 ms with ssl and email: only when a service is asked

    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", HEALTH_PATH)
        resp = conn.getresponse()
        body = resp.read(1 << 20)
        if resp.status != 200:
            return None
        data = json.loads(body or b"{}")
        return data if isinstance(data, dict) else {"status": "ok"}
    except (OSError, http.client.HTTPException, ValueError):
        return None
    finally:
        conn.close()


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
