"""A stand-in daemon whose health endpoint starts answering at a known monotonic instant.

Run by bench/health_bench.py as its own process: ``python -m bench.health_server PORT
READY_AT MODE``.  ``READY_AT`` is a ``time.monotonic()`` value (CLOCK_MONOTONIC is
system-wide on Linux, so the parent and this child share it).  MODE ``refuse``: the port is
closed until READY_AT, then bound and listening (like lemond, which binds once loaded).
MODE ``503``: the port answers 503 from the start and 200 from READY_AT.  The instant the
daemon became healthy is printed on stdout.  Stdlib only.
"""

from __future__ import annotations

import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

HEALTHY = threading.Event()


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        ok = HEALTHY.is_set()
        body = b'{"status": "ok", "version": "bench"}' if ok else b'{"status": "loading"}'
        self.send_response(200 if ok else 503)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        return None


def main(argv: list[str]) -> int:
    port, ready_at, mode = int(argv[0]), float(argv[1]), argv[2]
    if mode == "503":
        server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        time.sleep(max(0.0, ready_at - time.monotonic()))
        HEALTHY.set()
        became = time.monotonic()
    else:
        HEALTHY.set()
        time.sleep(max(0.0, ready_at - time.monotonic()))
        server = ThreadingHTTPServer(("127.0.0.1", port), Handler)  # binds and listens
        became = time.monotonic()
        threading.Thread(target=server.serve_forever, daemon=True).start()
    print(f"{became:.9f}", flush=True)
    sys.stdin.read()  # serve until the parent closes our stdin
    server.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
