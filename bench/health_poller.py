"""Runs inside the booted container (its own python3, stdlib only): asks lemond for health
every 20 ms and appends one line per answer to a log, ``START END OK`` (CLOCK_MONOTONIC
seconds; OK 1 for a 200, 0 for anything else).

    python3 -c "$(cat bench/health_poller.py)" LOG [PERIOD_S]

A fresh connection per poll, as a client would make; a plain HTTP/1.0 GET on a raw socket,
so that the poller costs the machine as little as it can (~0.3 ms of CPU per poll).  A poll
gives up after 0.25 s, so a stalled connection hides at most that much of lemond's return.
"""

from __future__ import annotations

import contextlib
import socket
import sys
import time

HOST, PORT = "127.0.0.1", 13305
REQUEST = b"GET /api/v1/health HTTP/1.0\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
TIMEOUT_S = 0.25


def poll() -> bool:
    try:
        with socket.create_connection((HOST, PORT), timeout=TIMEOUT_S) as conn:
            conn.sendall(REQUEST)
            head = conn.recv(64)
            with contextlib.suppress(OSError):
                while conn.recv(65536):  # read the answer to its end, as a client would
                    pass
    except OSError:
        return False
    return head.startswith((b"HTTP/1.0 200", b"HTTP/1.1 200"))


def main(log_path: str, period: float) -> None:
    with open(log_path, "a", buffering=1) as log:  # noqa: PTH123 - runs before anything
        due = time.monotonic()
        while True:
            started = time.monotonic()
            ok = poll()
            log.write(f"{started:.6f} {time.monotonic():.6f} {int(ok)}\n")
            due += period
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            else:
                due = time.monotonic()


if __name__ == "__main__":
    main(sys.argv[1], float(sys.argv[2]) if len(sys.argv) > 2 else 0.02)
