"""The opener downloads go through: http and https only, a few redirects, and a deadline that
can cut any connection wherever http.client or ssl waits on it.

``urllib.request`` with exactly the handlers a download needs (``build_opener`` would add
file, ftp and data): proxies from the environment (HTTP_PROXY/HTTPS_PROXY/NO_PROXY), TLS
verified against the system's trust store, at most 10 redirects and only to http(s) URLs, and
a redirect's body never read.  Its connections register with a :class:`Deadline`: setting
socket timeouts cannot bound what urllib and http.client loop over (header lines, chunk-size
lines, a proxy's CONNECT reply), so once the deadline passes the connection in use is shut
down, and again every 50 ms.
"""

from __future__ import annotations

import contextlib
import http.client
import math
import socket
import ssl
import threading
import time
import urllib.error
import urllib.request
from typing import IO, Any, cast
from urllib.parse import urlsplit

from hal0_lemonade.errors import FetchError

_CUT_EVERY = 0.05  # seconds between cuts once the deadline has passed


class Deadline:
    """A download's overall time limit, enforced on whatever connection it is using.

    Socket timeouts bound each wait, not their sum: a server that sends a byte every
    (timeout - 1) s, in the head, the body or an error body, never trips them, and urllib and
    http.client wait in loops we cannot reach (headers, chunk lines, a proxy's answer).  So
    once the deadline has passed, a thread shuts down the socket in use -- and again every
    ``_CUT_EVERY`` s, in case one was being opened -- which ends any wait on it at once.
    """

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._ends = time.monotonic() + seconds
        self._conn: http.client.HTTPConnection | None = None
        self._sock: socket.socket | None = None
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="hal0-deadline", daemon=True)
        self._thread.start()

    def left(self) -> float:
        return self._ends - time.monotonic()

    def timeout(self, timeout: float) -> float:
        """A socket timeout: ``timeout``, but not past the deadline (nor zero: non-blocking)."""
        return max(min(timeout, self.left()), 0.01)

    def connecting(self, conn: http.client.HTTPConnection) -> None:
        self._conn, self._sock = conn, None

    def connected(self, conn: http.client.HTTPConnection) -> None:
        # urllib drops ``conn.sock`` once the response head is read; the response keeps
        # reading from this socket.
        self._sock = conn.sock

    def _run(self) -> None:
        if self._stopped.wait(self.seconds):
            return
        while True:
            conn = self._conn
            for sock in (self._sock, conn.sock if conn is not None else None):
                if sock is not None:
                    # The plain socket's own shutdown, also for a TLS one: SSLSocket.shutdown
                    # would reset its TLS state under a read running in another thread.
                    with contextlib.suppress(OSError):
                        socket.socket.shutdown(sock, socket.SHUT_RDWR)
            if self._stopped.wait(_CUT_EVERY):
                return

    def stop(self) -> None:
        self._stopped.set()


class _Connection(http.client.HTTPConnection):
    """A connection the deadline can see and cut.  ``deadline`` is set by :func:`_handler`."""

    deadline: Deadline

    def connect(self) -> None:
        self.deadline.connecting(self)
        super().connect()  # TCP, and the CONNECT of a proxy tunnel
        # For https the TLS handshake comes next (HTTPSConnection.connect calls this first);
        # it may take only what is left of the deadline.
        self.sock.settimeout(self.deadline.timeout(self.timeout or math.inf))
        self.deadline.connected(self)


class _TLSConnection(http.client.HTTPSConnection, _Connection):
    def connect(self) -> None:
        super().connect()  # HTTPSConnection's: _Connection's, then the TLS handshake
        self.deadline.connected(self)


def _handler(
    base: type[urllib.request.AbstractHTTPHandler],
    connection: type[_Connection],
    deadline: Deadline,
) -> urllib.request.AbstractHTTPHandler:
    """urllib's http or https handler, opening its connections as ``connection``."""

    def make(host: str, **kwargs: Any) -> http.client.HTTPConnection:
        conn = connection(host, **kwargs)
        conn.deadline = deadline
        return conn

    class Handler(base):  # type: ignore[misc,valid-type]
        def do_open(
            self, http_class: object, req: urllib.request.Request, **kwargs: Any
        ) -> http.client.HTTPResponse:
            del http_class  # the stdlib's own class, replaced by ours
            return cast(http.client.HTTPResponse, super().do_open(make, req, **kwargs))

    return cast(urllib.request.AbstractHTTPHandler, Handler())


class _Redirects(urllib.request.HTTPRedirectHandler):
    """Follow at most ``max_redirections`` redirects, and only to http(s) URLs.

    (The stdlib would also follow one to ftp://.)  ``Range``/``If-Range`` go along: urllib
    carries every header but the body's own over a redirect.
    """

    max_redirections = 10

    def redirect_request(  # noqa: PLR0917 - the stdlib's signature
        self,
        req: urllib.request.Request,
        fp: IO[bytes],
        code: int,
        msg: str,
        headers: http.client.HTTPMessage,
        newurl: str,
    ) -> urllib.request.Request | None:
        # urllib reads a redirect's whole body into memory before it follows it (``fp.read()``
        # in http_error_302), and the server picks its length.  Closed, that read is a no-op.
        fp.close()
        if urlsplit(newurl).scheme not in {"http", "https"}:
            raise FetchError(f"refusing a redirect from {req.full_url} to {newurl}")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def opener(deadline: Deadline) -> urllib.request.OpenerDirector:
    """http and https only (``build_opener`` would add file, ftp and data handlers).

    ``ProxyHandler()`` reads HTTP_PROXY/HTTPS_PROXY/NO_PROXY from the environment; https
    verifies against the system's trust store (SSL_CERT_FILE/SSL_CERT_DIR honoured), loaded
    only when a TLS connection is made.  Every connection is one ``deadline`` can cut.
    """
    opener = urllib.request.OpenerDirector()
    for handler in (
        urllib.request.ProxyHandler(),
        urllib.request.UnknownHandler(),
        _handler(urllib.request.HTTPHandler, _Connection, deadline),
        _handler(urllib.request.HTTPSHandler, _TLSConnection, deadline),
        urllib.request.HTTPDefaultErrorHandler(),
        _Redirects(),
        urllib.request.HTTPErrorProcessor(),
    ):
        opener.add_handler(handler)
    return opener


def unfollowed(url: str, exc: urllib.error.HTTPError) -> FetchError:
    """Why a redirect ended the fetch: a loop or too many, a scheme we do not follow (urllib
    refuses anything but http(s) and ftp itself, before ``_Redirects`` sees it), or none given.
    """
    target = str(exc.filename or "")
    if "infinite loop" in str(exc.msg):
        return FetchError(f"too many redirects fetching {url}")
    if target and urlsplit(target).scheme not in {"http", "https"}:
        return FetchError(f"refusing a redirect from {url} to {target}")
    return FetchError(
        f"HTTP {exc.code} fetching {url} without a Location to follow",
        hint="check --artifact; the mirror answers with a redirect that leads nowhere",
    )


def untrusted(exc: BaseException) -> bool:
    reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
    return isinstance(reason, ssl.SSLCertVerificationError)


def describe(exc: BaseException) -> str:
    if isinstance(exc, urllib.error.URLError) and isinstance(exc.reason, BaseException):
        exc = exc.reason  # urllib's wrapper around the socket's own error
    name = type(exc).__name__
    text = str(exc).strip()
    return f"{name}: {text}" if text else name


def number(value: str) -> int | None:
    # ASCII digits only: str.isdigit() is also true for "²", which int() refuses.
    return int(value) if value.isascii() and value.isdigit() else None


def content_range_total(value: str) -> int | None:
    # "bytes */200" (416) or "bytes 0-99/200"
    return number(value.rpartition("/")[2])


def content_range_start(value: str) -> int | None:
    # "bytes 100-199/200"
    try:
        unit, rest = value.split(" ", 1)
        return int(rest.split("-", 1)[0]) if unit == "bytes" else None
    except ValueError:
        return None
