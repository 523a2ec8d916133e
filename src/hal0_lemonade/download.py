"""HTTP(S) downloads that resume where they broke off, as a :class:`fetch.Body`.

Built on the stdlib's ``urllib.request``/``http.client``: redirects (http and https only),
proxies from the environment (HTTP_PROXY/HTTPS_PROXY/NO_PROXY), TLS verified against the
system's trust store, and a body read with one ``recv`` per chunk.  A dropped connection is
resumed with ``Range``/``If-Range`` within a run, and across runs from the partial download the
release resource keeps in its cache.

Whoever serves the bytes is not trusted until the digest of the whole file matches, so no delay
or length the server chooses may hold the installer without bound:

- retries end after ``attempts`` failures in a row that brought no byte beyond the furthest one
  reached (bytes a server re-sends from the start, and we skip, are not progress);
- the whole download has a deadline (HAL0_LEMONADE_HTTP_DEADLINE), which no trickle can
  outlast: past it, the connection in use is shut down wherever http.client or ssl waits;
- the body never goes past the length the server announced, nor past what a release archive
  can be (:func:`download_cap`), so the partial download teed to the cache stays bounded too;
- error and redirect bodies are not read.

(httpx did this job before.  On the bench's 52 MB archive it spent ~0.15 s of CPU in its
per-chunk Python code, on the thread that also inflates, plus ~80 ms importing itself and
loading certifi's bundle even for http:// URLs; http.client reads the same body for ~0.02 s.
See BENCHMARKS.md.)
"""

from __future__ import annotations

import contextlib
import http.client
import time
import urllib.error
import urllib.request
import weakref
from typing import cast

from hal0_lemonade import archive, failpoints, http_open
from hal0_lemonade.errors import ArchiveError, FetchError

# The most one recv may bring.  A chunk is hashed, teed to the partial download and handed on
# before the next recv, so a reset loses at most the bytes in flight.
NET_CHUNK = 256 * 1024
DEADLINE = 1800.0  # seconds for a whole download (HAL0_LEMONADE_HTTP_DEADLINE's default)


def download_cap(limits: archive.Limits) -> int:
    """The most bytes a release archive can be: what it may unpack to, plus the tar headers
    and padding of each entry (well under 4 KiB), deflate's worst-case growth (well under
    0.1%) and the gzip framing.  A longer download is not a release."""
    return limits.max_total_bytes * 1001 // 1000 + limits.max_entries * 4096 + (1 << 20)


class HttpBody:
    """A GET that survives dropped connections by resuming at the byte it reached.

    ``attempts`` failures in a row (connect errors, 5xx/429, stalls, resets) without a byte
    beyond the furthest one reached end it; so does ``deadline`` seconds in all.
    ``max_bytes`` caps the body (default: :func:`download_cap` of the archive limits).
    """

    def __init__(
        self,
        url: str,
        *,
        timeout: float,
        deadline: float = DEADLINE,
        attempts: int = 4,
        offset: int = 0,
        validator: str | None = None,
        max_bytes: int | None = None,
    ) -> None:
        self.url = url
        self.offset = offset  # bytes of the artifact delivered so far (incl. a kept prefix)
        self.validator = validator
        self.total: int | None = None
        self._attempts = attempts
        self._timeout = timeout
        self._max = download_cap(archive.Limits()) if max_bytes is None else max_bytes
        self._deadline = http_open.Deadline(deadline)
        # Its thread ends with this object even if nobody closes it (a caller failing between
        # construction and reading); close() ends it sooner.
        weakref.finalize(self, self._deadline.stop)
        self._opener = http_open.opener(self._deadline)
        self._resp: http.client.HTTPResponse | None = None
        self._buffer = b""
        self._pos = 0  # bytes of _buffer already read
        self._skip = 0
        self._delivered = 0  # bytes handed to the reader by this object
        self._failures = 0  # in a row, since the download last got past byte _stuck_at
        self._stuck_at = offset
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
        timeout = self._deadline.timeout(self._timeout)
        try:
            return cast(http.client.HTTPResponse, self._opener.open(request, timeout=timeout))
        except urllib.error.HTTPError as exc:
            if 300 <= exc.code < 400:  # a redirect urllib would not follow
                exc.close()
                raise http_open.unfollowed(self.url, exc) from None
            return cast(http.client.HTTPResponse, exc)
        except (ValueError, http.client.InvalidURL) as exc:  # "unknown url type", bad port
            raise FetchError(f"invalid artifact URL {self.url}: {exc}") from exc

    def _connect(self) -> None:
        while True:
            self._check_deadline()
            try:
                resp = self._open()
            except (OSError, http.client.HTTPException) as exc:
                if http_open.untrusted(exc):  # the same certificate would fail the same way
                    why = http_open.describe(exc)
                    raise FetchError(
                        f"the TLS certificate of {self.url} is not trusted: {why}",
                        hint="check the mirror's certificate; a private CA belongs in the "
                        "system trust store (update-ca-certificates) or in SSL_CERT_FILE",
                    ) from exc
                self._failed(http_open.describe(exc))
                continue
            if self._deadline.left() <= 0:  # the head may have been cut short
                resp.close()
                self._check_deadline()
            # Error bodies are not read (closing is enough: no connection is reused), so a
            # server cannot hold us with a long or trickled one.
            if resp.status >= 500 or resp.status == 429:
                resp.close()
                self._failed(f"HTTP {resp.status}")
                continue
            if resp.status == 416 and self.offset and not self._delivered:
                # The kept prefix is no prefix of what the server has now: either it is the
                # whole file already (a run killed before it could rename it), or stale.
                resp.close()
                if (
                    http_open.content_range_total(resp.headers.get("Content-Range", ""))
                    == self.offset
                ):
                    self.total = self.offset
                    return
                self._start_over()  # the next request has no Range: no second 416
                continue
            if resp.status not in (200, 206):
                resp.close()
                raise FetchError(
                    f"HTTP {resp.status} fetching {self.url}",
                    hint="check --version/--artifact; the release may not exist at that URL",
                )
            self._accept(resp)
            return

    def _failed(self, reason: str) -> None:
        """Count a failure; give up after ``attempts`` in a row with no new byte, else back
        off (0.25 s, 0.5 s, 1 s, then 2 s; never past the deadline)."""
        self._check_deadline()  # a failure past it may be the deadline's own cut
        if self.offset > self._stuck_at:
            self._stuck_at, self._failures = self.offset, 0
        self._failures += 1
        if self._failures >= self._attempts:
            raise FetchError(
                f"could not fetch {self.url}: {self._failures} attempts in a row got no "
                f"further than byte {self.offset} (last: {reason})",
                hint=self._hint(
                    "check the network, the proxy settings (HTTPS_PROXY/NO_PROXY) or the "
                    "mirror, or use a local --artifact (HAL0_LEMONADE_HTTP_TIMEOUT sets the "
                    "connect and read timeout in seconds)"
                ),
            )
        time.sleep(min(0.25 * 2 ** (self._failures - 1), 2.0, max(self._deadline.left(), 0)))

    def _check_deadline(self) -> None:
        if self._deadline.left() > 0:
            return
        raise FetchError(
            f"download of {self.url} did not complete within {self._deadline.seconds:g} s "
            f"(HAL0_LEMONADE_HTTP_DEADLINE); it got to byte {self.offset}",
            hint=self._hint(
                "the mirror is too slow or keeps stalling; use another mirror or a local "
                "--artifact, or raise HAL0_LEMONADE_HTTP_DEADLINE for a slow link"
            ),
        )

    def _hint(self, text: str) -> str:
        # Only bytes kept can be resumed: after a DNS failure or a refused connection there
        # are none, and promising a resume would mislead.
        return f"{text}; a re-run resumes at byte {self.offset}" if self.offset else text

    def _accept(self, resp: http.client.HTTPResponse) -> None:
        if resp.status == 206:
            start = http_open.content_range_start(resp.headers.get("Content-Range", ""))
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
        length = http_open.number(resp.headers.get("Content-Length", ""))
        if length is not None and self.total is None:
            self.total = length + (self.offset - self._skip)
            if self.total > self._max:
                resp.close()
                raise self._too_big(f"announces {self.total} bytes")
        etag = resp.headers.get("ETag")
        if self.validator is None:
            if etag and not etag.startswith("W/"):
                self.validator = etag
            else:
                self.validator = resp.headers.get("Last-Modified")
        self._resp = resp

    def _too_big(self, what: str) -> ArchiveError:
        # An ArchiveError: these bytes are no release, and must not seed a later resume.
        return ArchiveError(
            f"{self.url} {what}, more than a release archive can be ({self._max} bytes, from "
            "HAL0_LEMONADE_MAX_UNPACKED_BYTES and HAL0_LEMONADE_MAX_ENTRIES)",
            hint="the mirror serves something other than the release; nothing was installed",
        )

    def _start_over(self) -> None:
        self.offset = 0
        self.validator = None
        self.total = None
        self.restarted = True
        self._stuck_at = 0

    # -- reading ---------------------------------------------------------------------------
    def read(self, size: int) -> bytes:
        while self._pos >= len(self._buffer):
            # Nothing past the announced end: http.client stops at each response's own
            # Content-Length, this holds across responses (a resumed one may announce more).
            if self.total is not None and self.offset >= self.total:
                return b""
            chunk = self._next_chunk()
            if chunk is None:
                return b""
            if self._skip:
                cut = min(self._skip, len(chunk))
                self._skip -= cut
                chunk = chunk[cut:]
            if self.total is not None:
                chunk = chunk[: self.total - self.offset]
            elif self.offset + len(chunk) > self._max:  # no length announced: the cap
                raise self._too_big(f"sent more than {self._max} bytes")
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
        while True:
            self._check_deadline()
            try:
                chunk = self._recv()
            except TimeoutError:
                reason = f"no data for {self._timeout:g} s (stalled)"
            except (OSError, http.client.HTTPException) as exc:
                reason = http_open.describe(exc)
            else:
                if chunk is None:
                    # A body without a length ends when the connection does, which is also
                    # what the deadline's cut looks like.
                    self._check_deadline()
                else:
                    failpoints.hit("download.chunk")
                return chunk
            self._close_response()
            self._failed(reason)
            self._connect()  # resumes at self.offset (+ buffered skip)

    def _close_response(self) -> None:
        if self._resp is not None:
            with contextlib.suppress(Exception):
                self._resp.close()
            self._resp = None

    def close(self) -> None:
        self._close_response()
        self._deadline.stop()
