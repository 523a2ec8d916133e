"""Loopback HTTP servers for download tests: a file server with fault injection, and a proxy.

Both run ``ThreadingHTTPServer`` on 127.0.0.1 (port 0) in a daemon thread and are
context managers. Every sleep a fault makes is bounded (``MAX_FAULT_SECONDS``) and
wakes early when the server stops, so a misbehaving client cannot hang the suite.
Given ``tls=`` (a server-side ``ssl.SSLContext``), a server speaks HTTPS instead.
"""

from __future__ import annotations

import hashlib
import http.client
import select
import socket
import ssl
import struct
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any, Self, cast
from urllib.parse import urlsplit

MAX_FAULT_SECONDS = 30.0
CHUNK = 64 * 1024
# A fixed Last-Modified keeps validators stable across runs.
FIXED_LAST_MODIFIED = 1_740_787_200.0


# --- faults -------------------------------------------------------------------------------
# Each fault applies to the first ``times`` requests for its path (None: every request).
# Body faults (Reset, Stall, ShortBody, LongBody, Trickle, SlowHead, WrongContent) only act
# on, and only count, GET requests; Status, SlowError and redirects act on every method.
# The body faults answer 200 with the resource from byte 0 whatever the Range asked for.


@dataclass(frozen=True)
class Status:
    """Answer ``code`` with a short text body instead of the resource."""

    code: int = 503
    times: int | None = None
    retry_after: int | None = None


@dataclass(frozen=True)
class Reset:
    """Send headers and ``after_bytes`` of the body, then reset the connection (RST)."""

    after_bytes: int = 0
    times: int | None = None


@dataclass(frozen=True)
class Stall:
    """Send headers and the first ``after_bytes`` of the body, then nothing for ``seconds``
    (bounded), then close."""

    seconds: float = 5.0
    times: int | None = None
    after_bytes: int = 0


@dataclass(frozen=True)
class ShortBody:
    """Announce the full Content-Length, send only ``sent_bytes``, then close cleanly."""

    sent_bytes: int = 0
    times: int | None = None


@dataclass(frozen=True)
class LongBody:
    """Send the whole resource plus ``extra`` junk bytes (``fill``), announcing ``announce``.

    ``announce`` defaults to the resource's true size; set it lower to make a client
    that trusts Content-Length keep a truncated prefix, or higher to announce a size the
    body never reaches (a str is sent as it is).  ``no_length`` sends no Content-Length at
    all: the body ends when the server closes the connection.
    """

    extra: int = 1024
    announce: int | str | None = None
    times: int | None = None
    fill: bytes = b"\xa5"
    no_length: bool = False


@dataclass(frozen=True)
class Redirect:
    """Redirect to ``to`` (a path on this server, or an absolute URL).

    ``body_bytes``: the redirect's own body is that many zero bytes (announced), streamed as
    fast as the client takes them, instead of a short text.
    """

    to: str
    code: int = 302
    times: int | None = None
    body_bytes: int = 0


@dataclass(frozen=True)
class RedirectLoop:
    """Redirect to the same path, forever."""

    code: int = 302
    times: int | None = None


@dataclass(frozen=True)
class Trickle:
    """Send ``chunk`` bytes every ``interval`` seconds; close after ``max_seconds``."""

    chunk: int = 1
    interval: float = 0.2
    max_seconds: float = 10.0
    times: int | None = None


@dataclass(frozen=True)
class SlowHead:
    """Send the status line, then header bytes one every ``interval`` seconds, never ending
    the head; close after ``max_seconds`` (bounded)."""

    interval: float = 0.2
    max_seconds: float = 10.0
    times: int | None = None


@dataclass(frozen=True)
class SlowError:
    """Answer ``code``, announcing a 1 MiB body and sending it one byte every ``interval``
    seconds; close after ``max_seconds`` (bounded)."""

    code: int = 503
    interval: float = 0.2
    max_seconds: float = 10.0
    times: int | None = None


@dataclass(frozen=True)
class WrongContent:
    """Serve other bytes (default: the resource with every byte inverted, same length)."""

    data: bytes | None = None
    times: int | None = None


Fault = (
    Status
    | Reset
    | Stall
    | ShortBody
    | LongBody
    | Redirect
    | RedirectLoop
    | Trickle
    | SlowHead
    | SlowError
    | WrongContent
)
_BODY_FAULTS = (Reset, Stall, ShortBody, LongBody, Trickle, SlowHead, WrongContent)


@dataclass(frozen=True)
class RequestRecord:
    method: str
    target: str  # request target as sent: path + query, or an absolute URI through a proxy
    path: str
    headers: dict[str, str]  # keys lower-cased
    at: float = field(default_factory=time.time)

    @property
    def range(self) -> str | None:
        return self.headers.get("range")


@dataclass
class _Resource:
    source: bytes | Path
    size: int
    etag: str
    last_modified: str
    content_type: str
    fault: Fault | None = None
    fault_left: int | None = None

    def read(self, start: int, end: int) -> Iterator[bytes]:
        """Yield bytes [start, end) in chunks, reading files lazily."""
        if isinstance(self.source, bytes):
            for pos in range(start, end, CHUNK):
                yield self.source[pos : min(pos + CHUNK, end)]
            return
        with self.source.open("rb") as fh:
            fh.seek(start)
            left = end - start
            while left > 0 and (chunk := fh.read(min(CHUNK, left))):
                left -= len(chunk)
                yield chunk


def _digest(source: bytes | Path) -> tuple[int, str]:
    if isinstance(source, bytes):
        return len(source), hashlib.sha256(source).hexdigest()
    digest = hashlib.sha256()
    with source.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return source.stat().st_size, digest.hexdigest()


def _record(handler: BaseHTTPRequestHandler) -> RequestRecord:
    headers = {key.lower(): value for key, value in handler.headers.items()}
    path = urlsplit(handler.path).path
    return RequestRecord(handler.command, handler.path, path, headers)


def _parse_range(header: str, size: int) -> tuple[int, int] | str | None:
    """Return (start, end-exclusive), None to ignore the header, or "unsatisfiable"."""
    unit, _, spec = header.partition("=")
    if unit.strip() != "bytes" or "," in spec:
        return None  # multi-range and other units: answer the full body, as RFC 9110 allows
    first, _, last = spec.strip().partition("-")
    try:
        if not first:
            suffix = int(last)
            return (max(size - suffix, 0), size) if suffix > 0 else "unsatisfiable"
        start = int(first)
        end = min(int(last) + 1, size) if last else size
    except ValueError:
        return None
    return (start, end) if start < size and start < end else "unsatisfiable"


class _Server(ThreadingHTTPServer):
    """A loopback server that knows its owner and stays quiet when a client hangs up."""

    daemon_threads = True

    def __init__(
        self, handler: type[BaseHTTPRequestHandler], owner: Any, tls: ssl.SSLContext | None
    ) -> None:
        super().__init__(("127.0.0.1", 0), handler)
        self.owner = owner
        self.tls = tls

    def get_request(self) -> tuple[socket.socket, Any]:
        sock, address = super().get_request()
        if self.tls is None:
            return sock, address
        # The handshake is left to the connection's own thread (finish_request): done here,
        # in accept, one client that never sends a hello would block every other one.
        return self.tls.wrap_socket(sock, server_side=True, do_handshake_on_connect=False), address

    def finish_request(self, request: Any, client_address: Any) -> None:
        if isinstance(request, ssl.SSLSocket):
            request.settimeout(MAX_FAULT_SECONDS)
            request.do_handshake()  # a failure goes to handle_error, like any other
        super().finish_request(request, client_address)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients that drop the connection on purpose (timeouts, resets under test) or refuse
        # our certificate (an ssl.SSLError in the handshake) are the point of many tests; a
        # traceback on stderr would leak into another test's output.
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, TimeoutError, ssl.SSLError)):
            return
        super().handle_error(request, client_address)


class _Loopback:
    """Shared lifecycle for our servers: thread start/stop, context manager."""

    httpd: _Server

    def __init__(
        self, handler: type[BaseHTTPRequestHandler], tls: ssl.SSLContext | None = None
    ) -> None:
        self.stopping = threading.Event()
        self._lock = threading.Lock()
        self._requests: list[RequestRecord] = []
        self.tls = tls
        self.httpd = _Server(handler, self, tls)
        self._thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def port(self) -> int:
        return int(self.httpd.server_address[1])

    @property
    def base_url(self) -> str:
        scheme = "http" if self.tls is None else "https"
        return f"{scheme}://127.0.0.1:{self.port}"

    def url(self, path: str) -> str:
        return self.base_url + path

    @property
    def requests(self) -> list[RequestRecord]:
        with self._lock:
            return list(self._requests)

    def requests_for(self, path: str) -> list[RequestRecord]:
        return [r for r in self.requests if r.path == path]

    def clear_requests(self) -> None:
        with self._lock:
            self._requests.clear()

    def _log(self, record: RequestRecord) -> None:
        with self._lock:
            self._requests.append(record)

    def start(self) -> Self:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        if self._thread.is_alive():
            self.httpd.shutdown()
            self._thread.join(timeout=5)
        self.httpd.server_close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class HTTPTestServer(_Loopback):
    """Serves registered resources; see the fault classes for injected misbehaviour.

    ``tls``: a server-side ``ssl.SSLContext`` (its certificate loaded) to serve HTTPS.
    """

    def __init__(self, *, tls: ssl.SSLContext | None = None) -> None:
        super().__init__(_FileHandler, tls)
        self._resources: dict[str, _Resource] = {}

    def add(
        self,
        path: str,
        data: bytes | Path,
        fault: Fault | None = None,
        *,
        etag: str | None = None,
        last_modified: float = FIXED_LAST_MODIFIED,
        content_type: str = "application/octet-stream",
    ) -> str:
        """Register ``data`` at ``path`` (a Path is streamed from disk); return its URL."""
        size, digest = _digest(data)
        resource = _Resource(
            source=data,
            size=size,
            etag=etag if etag is not None else f'"{digest[:32]}"',
            last_modified=formatdate(last_modified, usegmt=True),
            content_type=content_type,
        )
        with self._lock:
            self._resources[path] = resource
        self.set_fault(path, fault)
        return self.url(path)

    def set_fault(self, path: str, fault: Fault | None) -> None:
        with self._lock:
            resource = self._resources[path]
            resource.fault = fault
            resource.fault_left = None if fault is None else fault.times

    def remove(self, path: str) -> None:
        with self._lock:
            del self._resources[path]

    def _lookup(self, path: str, method: str) -> tuple[_Resource | None, Fault | None]:
        """Find the resource and the fault to apply now, consuming one use of it."""
        with self._lock:
            resource = self._resources.get(path)
            if resource is None or resource.fault is None:
                return resource, None
            fault = resource.fault
            if isinstance(fault, _BODY_FAULTS) and method != "GET":
                return resource, None
            if resource.fault_left is not None:
                if resource.fault_left <= 0:
                    return resource, None
                resource.fault_left -= 1
            return resource, fault

    def sleep(self, seconds: float) -> bool:
        """Sleep (bounded); return False if the server is stopping."""
        return not self.stopping.wait(min(seconds, MAX_FAULT_SECONDS))

    def drip(self, write: Callable[[], object], interval: float, max_seconds: float) -> None:
        """Call ``write`` every ``interval`` seconds for at most ``max_seconds`` (bounded),
        until the server stops."""
        deadline = time.monotonic() + min(max_seconds, MAX_FAULT_SECONDS)
        while time.monotonic() < deadline:
            write()
            if not self.sleep(interval):
                return


class _FileHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "hal0-test-http"
    timeout = 30  # drop idle keep-alive connections so threads do not linger

    @property
    def owner(self) -> HTTPTestServer:
        owner: HTTPTestServer = cast(_Server, self.server).owner
        return owner

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the request log is self.owner.requests

    def do_GET(self) -> None:
        self._serve()

    def do_HEAD(self) -> None:
        self._serve()

    def _simple(self, code: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(code)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _serve(self) -> None:
        self.owner._log(_record(self))
        path = urlsplit(self.path).path
        resource, fault = self.owner._lookup(path, self.command)
        if resource is None:
            self._simple(404, b"not found\n")
            return
        if isinstance(fault, Status):
            extra = {} if fault.retry_after is None else {"Retry-After": str(fault.retry_after)}
            self._simple(fault.code, f"injected {fault.code}\n".encode(), extra)
        elif isinstance(fault, Redirect | RedirectLoop):
            to = path if isinstance(fault, RedirectLoop) else fault.to
            location = self.owner.url(to) if to.startswith("/") else to
            if isinstance(fault, Redirect) and fault.body_bytes:
                self._big_redirect(fault, location)
            else:
                self._simple(fault.code, b"moved\n", {"Location": location})
        elif isinstance(fault, SlowError):
            self.close_connection = True
            self.send_response(fault.code)
            self.send_header("Content-Length", str(1 << 20))
            self.end_headers()
            self.owner.drip(lambda: self.wfile.write(b"x"), fault.interval, fault.max_seconds)
        elif fault is None or isinstance(fault, WrongContent):
            self._normal(resource, fault)
        else:
            self._broken(resource, fault)

    def _big_redirect(self, fault: Redirect, location: str) -> None:
        self.close_connection = True
        self.send_response(fault.code)
        self.send_header("Location", location)
        self.send_header("Content-Length", str(fault.body_bytes))
        self.end_headers()
        if self.command != "HEAD":
            _write_fill(self.wfile, b"\0", fault.body_bytes)

    def _headers(
        self, resource: _Resource, code: int, length: int | str | None, extra: dict[str, str]
    ) -> None:
        self.send_response(code)
        self.send_header("Content-Type", resource.content_type)
        if length is not None:
            self.send_header("Content-Length", str(length))
        self.send_header("ETag", resource.etag)
        self.send_header("Last-Modified", resource.last_modified)
        self.send_header("Accept-Ranges", "bytes")
        for key, value in extra.items():
            self.send_header(key, value)
        self.end_headers()

    def _normal(self, resource: _Resource, fault: WrongContent | None) -> None:
        if fault is not None:
            # Other bytes behind the same validators: only a digest check can notice.
            other = fault.data
            if other is None:
                other = bytes(b ^ 0xFF for b in b"".join(resource.read(0, resource.size)))
            resource = replace(resource, source=other, size=len(other))
        size = resource.size
        start, end, code, extra = 0, size, 200, {}
        wanted = self.headers.get("Range")
        if_range = self.headers.get("If-Range")
        if wanted and (if_range is None or if_range in (resource.etag, resource.last_modified)):
            parsed = _parse_range(wanted, size)
            if parsed == "unsatisfiable":
                self._simple(416, b"range not satisfiable\n", {"Content-Range": f"bytes */{size}"})
                return
            if isinstance(parsed, tuple):
                start, end = parsed
                code = 206
                extra = {"Content-Range": f"bytes {start}-{end - 1}/{size}"}
        self._headers(resource, code, end - start, extra)
        if self.command == "HEAD":
            return
        if isinstance(resource.source, Path):
            # The kernel copies the file to the socket: a real origin is another machine, and
            # a Python copy loop here would take CPU from the client under test.
            with resource.source.open("rb") as fh:
                self.connection.sendfile(fh, start, end - start)
            return
        for chunk in resource.read(start, end):
            self.wfile.write(chunk)

    def _broken(self, resource: _Resource, fault: Fault) -> None:
        """Body faults: the connection is never reused afterwards."""
        self.close_connection = True
        size = resource.size
        if isinstance(fault, SlowHead):
            # Written raw: send_response would end the status line's head with the headers.
            self.wfile.write(b"HTTP/1.1 200 OK\r\nX-Slow: ")
            self.owner.drip(lambda: self.wfile.write(b"a"), fault.interval, fault.max_seconds)
            return
        if isinstance(fault, LongBody):
            announce = size if fault.announce is None else fault.announce
            self._headers(
                resource, 200, None if fault.no_length else announce, {"Connection": "close"}
            )
            for chunk in resource.read(0, size):
                self.wfile.write(chunk)
            _write_fill(self.wfile, fault.fill, fault.extra)
            return
        self._headers(resource, 200, size, {"Connection": "close"})
        if isinstance(fault, Reset | ShortBody):
            limit = fault.after_bytes if isinstance(fault, Reset) else fault.sent_bytes
            for chunk in resource.read(0, min(limit, size)):
                self.wfile.write(chunk)
            if isinstance(fault, Reset):
                # SO_LINGER with a zero timeout makes close() send RST instead of FIN.
                linger = struct.pack("ii", 1, 0)
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
                self.connection.close()
        elif isinstance(fault, Stall):
            for chunk in resource.read(0, min(fault.after_bytes, size)):
                self.wfile.write(chunk)
            self.owner.sleep(fault.seconds)
        elif isinstance(fault, Trickle):
            deadline = time.monotonic() + min(fault.max_seconds, MAX_FAULT_SECONDS)
            pos = 0
            while pos < size and time.monotonic() < deadline:
                chunk = b"".join(resource.read(pos, min(pos + fault.chunk, size)))
                self.wfile.write(chunk)
                pos += len(chunk)
                if pos < size and not self.owner.sleep(fault.interval):
                    break


def _write_fill(out: Any, fill: bytes, count: int) -> None:
    """Write ``count`` bytes of ``fill`` (repeated) in chunks: no buffer of ``count`` bytes."""
    block = fill * (CHUNK // len(fill))
    while count > 0:
        piece = block[: min(count, len(block))]
        out.write(piece)
        count -= len(piece)


# --- forward proxy ------------------------------------------------------------------------

_HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "proxy-connection", "proxy-authorization", "te", "trailer"}
    | {"transfer-encoding", "upgrade"}
)


class ProxyServer(_Loopback):
    """A minimal forward proxy: absolute-URI ``http://`` GET/HEAD, and CONNECT tunnels (https).

    It records every request it sees (``requests``; a CONNECT's ``target`` and ``path`` are
    its ``host:port``).  A tunnel relays bytes both ways until either side closes, stays
    open at most ``MAX_FAULT_SECONDS`` without traffic, and ends when the proxy stops.
    ``tls`` makes it an HTTPS proxy (the client's connection to it is TLS).
    """

    def __init__(self, *, tls: ssl.SSLContext | None = None) -> None:
        super().__init__(_ProxyHandler, tls)


class _ProxyHandler(BaseHTTPRequestHandler):
    server_version = "hal0-test-proxy"
    timeout = 30
    # Unbuffered reads: a client may send its first tunnel bytes (a TLS hello) right behind
    # the CONNECT head, and a buffered rfile would keep them from the relay.
    rbufsize = 0

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _fail(self, code: int, message: str) -> None:
        body = message.encode() + b"\n"
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_CONNECT(self) -> None:
        owner: ProxyServer = cast(_Server, self.server).owner
        owner._log(replace(_record(self), path=self.path))
        self.close_connection = True  # after a tunnel (or a refusal) the connection is done
        host, _, port = self.path.rpartition(":")
        host = host.strip("[]")  # an IPv6 literal: [::1]:443
        if not host or not port.isdigit():
            self._fail(400, f"not a host:port CONNECT target: {self.path}")
            return
        try:
            upstream = socket.create_connection((host, int(port)), timeout=MAX_FAULT_SECONDS)
        except OSError as exc:
            self._fail(502, f"cannot reach {self.path}: {exc}")
            return
        with upstream:
            # Written raw: send_response would say HTTP/1.0 (this handler's protocol_version).
            self.wfile.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            _relay(self.connection, upstream, owner.stopping)

    def do_HEAD(self) -> None:
        self.do_GET()

    def do_GET(self) -> None:
        cast(_Server, self.server).owner._log(_record(self))
        url = urlsplit(self.path)
        if url.scheme != "http" or not url.hostname:
            self._fail(400, f"not an absolute http:// URI: {self.path}")
            return
        target = url.path + (f"?{url.query}" if url.query else "") or "/"
        headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
        conn = http.client.HTTPConnection(url.hostname, url.port or 80, timeout=MAX_FAULT_SECONDS)
        try:
            conn.request(self.command, target, headers=headers)
            upstream = conn.getresponse()
            self.send_response(upstream.status, upstream.reason)
            for key, value in upstream.getheaders():
                if key.lower() not in _HOP_BY_HOP:
                    self.send_header(key, value)
            self.send_header("Connection", "close")
            self.end_headers()
            while self.command != "HEAD" and (chunk := upstream.read1(CHUNK)):
                self.wfile.write(chunk)
        except (OSError, http.client.HTTPException) as exc:
            self.close_connection = True
            if not self.wfile.closed:
                self.log_error("upstream failed: %s", exc)
        finally:
            conn.close()


def _relay(client: socket.socket, upstream: socket.socket, stopping: threading.Event) -> None:
    """Copy bytes both ways until either side closes or fails, ``stopping`` is set, or
    nothing moves for ``MAX_FAULT_SECONDS``.  A side that drops mid-tunnel just ends it."""
    peer = {client: upstream, upstream: client}
    idle_until = time.monotonic() + MAX_FAULT_SECONDS
    try:
        while not stopping.is_set() and time.monotonic() < idle_until:
            # select cannot see bytes an SSLSocket (a TLS proxy) has already decrypted.
            ready: list[socket.socket] = [
                s for s in peer if isinstance(s, ssl.SSLSocket) and s.pending()
            ]
            if not ready:
                # A short wait so that stop() is noticed promptly.
                ready = select.select(list(peer), [], [], 0.1)[0]
            for sock in ready:
                data = sock.recv(CHUNK)
                if not data:
                    return  # one side closed: the tunnel is over
                peer[sock].sendall(data)
                idle_until = time.monotonic() + MAX_FAULT_SECONDS
    except (OSError, ValueError):  # reset, broken pipe, timeout; ValueError: a closed socket
        return


# --- helpers ------------------------------------------------------------------------------


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (racy by nature, fine for tests)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_http(url: str, timeout: float = 10.0) -> bytes:
    """Poll ``url`` until it answers 200; return the body or raise TimeoutError."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                body: bytes = response.read()
                return body
        except OSError as exc:
            last = exc
            time.sleep(0.05)
    raise TimeoutError(f"{url} did not answer within {timeout}s: {last}")
