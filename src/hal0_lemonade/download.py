"""HTTP(S) downloads that resume where they broke off, as a :class:`fetch.Body`.

Built on the stdlib's ``urllib.request``/``http.client``: redirects (http and https only),
proxies from the environment (HTTP_PROXY/HTTPS_PROXY/NO_PROXY), TLS verified against the
system's trust store, and a body read with one ``recv`` per chunk.  A dropped connection is
resumed with ``Range``/``If-Range`` within a run, and across runs from the partial download the
release resource keeps in its cache.

(httpx did this job before.  On the bench's 52 MB archive it spent ~0.15 s of CPU in its
per-chunk Python code, on the thread that also inflates, plus ~80 ms importing itself and
loading certifi's bundle even for http:// URLs; http.client reads the same body for ~0.02 s.
See BENCHMARKS.md.)
"""

from __future__ import annotations

import contextlib
import http.client
import ssl
import time
import urllib.error
import urllib.request
from typing import IO, cast
from urllib.parse import urlsplit

from hal0_lemonade import failpoints
from hal0_lemonade.errors import FetchError

# The most one recv may bring.  A chunk is hashed, teed to the partial download and handed on
# before the next recv, so a reset loses at most the bytes in flight.
NET_CHUNK = 256 * 1024


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
        if urlsplit(newurl).scheme not in {"http", "https"}:
            raise FetchError(f"refusing a redirect from {req.full_url} to {newurl}")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def _opener() -> urllib.request.OpenerDirector:
    """http and https only (``build_opener`` would add file, ftp and data handlers).

    ``ProxyHandler()`` reads HTTP_PROXY/HTTPS_PROXY/NO_PROXY from the environment; https
    verifies against the system's trust store (SSL_CERT_FILE/SSL_CERT_DIR honoured), loaded
    only when a TLS connection is made.
    """
    opener = urllib.request.OpenerDirector()
    for handler in (
        urllib.request.ProxyHandler(),
        urllib.request.UnknownHandler(),
        urllib.request.HTTPHandler(),
        urllib.request.HTTPSHandler(),
        urllib.request.HTTPDefaultErrorHandler(),
        _Redirects(),
        urllib.request.HTTPErrorProcessor(),
    ):
        opener.add_handler(handler)
    return opener


class HttpBody:
    """A GET that survives dropped connections by resuming at the byte it reached."""

    def __init__(
        self,
        url: str,
        *,
        timeout: float,
        attempts: int = 4,
        offset: int = 0,
        validator: str | None = None,
    ) -> None:
        self.url = url
        self.offset = offset  # bytes of the artifact delivered so far (incl. a kept prefix)
        self.validator = validator
        self.total: int | None = None
        self._attempts = attempts
        self._opener = _opener()
        self._timeout = timeout
        self._resp: http.client.HTTPResponse | None = None
        self._buffer = b""
        self._pos = 0  # bytes of _buffer already read
        self._skip = 0
        self._delivered = 0  # bytes handed to the reader by this object
        self.restarted = False  # True when a kept prefix was dropped: the body starts at 0
        try:
            self._connect()
        except BaseException:
            self.close()  # the caller gets no object to close: do not leak the connection
            raise

    # -- connection handling -------------------------------------------------------------
    def _open(self) -> http.client.HTTPResponse:
        """One GET from ``self.offset``; an HTTP error status comes back as a response too."""
        headers = {"User-Agent": "hal0-lemonade", "Accept-Encoding": "identity"}
        if self.offset:
            headers["Range"] = f"bytes={self.offset}-"
            if self.validator:
                headers["If-Range"] = self.validator
        # The opener has http and https handlers only (and redirects stay within them).
        request = urllib.request.Request(self.url, headers=headers)  # noqa: S310
        try:
            return cast(http.client.HTTPResponse, self._opener.open(request, timeout=self._timeout))
        except urllib.error.HTTPError as exc:
            if 300 <= exc.code < 400:  # a redirect urllib would not follow
                exc.close()
                raise _unfollowed(self.url, exc) from None
            return cast(http.client.HTTPResponse, exc)
        except (ValueError, http.client.InvalidURL) as exc:  # "unknown url type", bad port
            raise FetchError(f"invalid artifact URL {self.url}: {exc}") from exc

    def _connect(self) -> None:
        delay = 0.25
        last: str = ""
        for attempt in range(self._attempts):
            if attempt:
                time.sleep(delay)
                delay = min(delay * 2, 2.0)
            try:
                resp = self._open()
            except (OSError, http.client.HTTPException) as exc:
                if _untrusted(exc):  # the same certificate again would fail the same way
                    raise FetchError(
                        f"the TLS certificate of {self.url} is not trusted: {_describe(exc)}",
                        hint="check the mirror's certificate; a private CA belongs in the "
                        "system trust store (update-ca-certificates) or in SSL_CERT_FILE",
                    ) from exc
                last = _describe(exc)
                continue
            if resp.status >= 500 or resp.status == 429:
                last = f"HTTP {resp.status}"
                _discard(resp)
                continue
            if resp.status == 416 and self.offset and not self._delivered:
                # The kept prefix is no prefix of what the server has now: either it is the
                # whole file already (a run killed before it could rename it), or stale.
                _discard(resp)
                if _content_range_total(resp.headers.get("Content-Range", "")) == self.offset:
                    self.total = self.offset
                    return
                self._start_over()
                continue
            if resp.status not in (200, 206):
                _discard(resp)
                raise FetchError(
                    f"HTTP {resp.status} fetching {self.url}",
                    hint="check --version/--artifact; the release may not exist at that URL",
                )
            self._accept(resp)
            return
        raise FetchError(
            f"could not fetch {self.url} after {self._attempts} attempts: {last}",
            hint="check the network, proxy settings (HTTPS_PROXY/NO_PROXY) or use a local "
            "--artifact; a re-run resumes the partial download",
        )

    def _accept(self, resp: http.client.HTTPResponse) -> None:
        if resp.status == 206:
            start = _content_range_start(resp.headers.get("Content-Range", ""))
            if start is None or start > self.offset:
                resp.close()
                raise FetchError(f"bad Content-Range from {self.url}")
            self._skip = self.offset - start
        elif self.offset and not self._delivered:
            # A prefix kept from an earlier run, but the server sends the whole body (it
            # ignores Range, or If-Range says the file changed): start over from byte 0, and
            # the caller drops its prefix (``restarted``).
            self._start_over()
            self._skip = 0
        else:
            # Mid-transfer, the server ignored the Range: skip what was already delivered;
            # the final digest check catches a file that changed under us.
            self._skip = self.offset
        length = resp.headers.get("Content-Length")
        if length is not None and length.isdigit() and self.total is None:
            self.total = int(length) + (self.offset - self._skip)
        etag = resp.headers.get("ETag")
        if self.validator is None:
            if etag and not etag.startswith("W/"):
                self.validator = etag
            else:
                self.validator = resp.headers.get("Last-Modified")
        self._resp = resp

    def _start_over(self) -> None:
        self.offset = 0
        self.validator = None
        self.total = None
        self.restarted = True

    # -- reading ---------------------------------------------------------------------------
    def read(self, size: int) -> bytes:
        while self._pos >= len(self._buffer):
            chunk = self._next_chunk()
            if chunk is None:
                return b""
            if self._skip:
                cut = min(self._skip, len(chunk))
                self._skip -= cut
                chunk = chunk[cut:]
            self._buffer, self._pos = chunk, 0
        # A read of a whole chunk hands the chunk itself on (no copy); a smaller one advances
        # an offset instead of re-slicing the rest of the chunk each time.
        out = self._buffer[self._pos : self._pos + size]
        self._pos += len(out)
        self.offset += len(out)
        self._delivered += len(out)
        return out

    def _recv(self) -> bytes | None:
        """What one ``recv`` brought, None at the end of the body; raises if it ends early."""
        resp = self._resp
        if resp is None:
            return None
        # Small chunks: bytes the transport received are handed on (and kept for a resume)
        # before a reset can take a half-filled chunk down with it.
        chunk = resp.read1(NET_CHUNK)
        if chunk:
            return chunk
        if resp.length:  # http.client ends a body cut short quietly: say so, to resume
            raise http.client.IncompleteRead(b"", resp.length)
        return None

    def _next_chunk(self) -> bytes | None:
        last = ""
        for _ in range(self._attempts):
            try:
                chunk = self._recv()
            except TimeoutError:
                last = f"no data for {self._timeout:g} s (stalled)"
            except (OSError, http.client.HTTPException) as exc:
                last = _describe(exc)
            else:
                if chunk is not None:
                    failpoints.hit("download.chunk")
                return chunk
            self._close_response()
            self._connect()  # resumes at self.offset (+ buffered skip)
        raise FetchError(
            f"download of {self.url} kept failing mid-transfer at byte {self.offset}: {last}",
            hint="check the network or the mirror; a re-run resumes the partial download "
            "(HAL0_LEMONADE_HTTP_TIMEOUT sets the connect and read timeout in seconds)",
        )

    def _close_response(self) -> None:
        if self._resp is not None:
            with contextlib.suppress(Exception):
                self._resp.close()
            self._resp = None

    def close(self) -> None:
        self._close_response()


def _unfollowed(url: str, exc: urllib.error.HTTPError) -> FetchError:
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


def _discard(resp: http.client.HTTPResponse, limit: int = 64 * 1024) -> None:
    """Close an error response, reading a short body first so the connection ends cleanly
    (closing a socket with unread data makes the kernel reset it)."""
    with contextlib.suppress(Exception):
        resp.read(limit)
    resp.close()


def _untrusted(exc: BaseException) -> bool:
    reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
    return isinstance(reason, ssl.SSLCertVerificationError)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, urllib.error.URLError) and isinstance(exc.reason, BaseException):
        exc = exc.reason  # urllib's wrapper around the socket's own error
    name = type(exc).__name__
    text = str(exc).strip()
    return f"{name}: {text}" if text else name


def _content_range_total(value: str) -> int | None:
    # "bytes */200" (416) or "bytes 0-99/200"
    total = value.rpartition("/")[2]
    return int(total) if total.isdigit() else None


def _content_range_start(value: str) -> int | None:
    # "bytes 100-199/200"
    try:
        unit, rest = value.split(" ", 1)
        return int(rest.split("-", 1)[0]) if unit == "bytes" else None
    except ValueError:
        return None
