"""Artifact sources as byte streams that are hashed while they are read.

Nothing downstream trusts a byte until :meth:`HashingReader.verify` has compared the digest of
the *whole* artifact with the pin.  HTTP downloads resume with ``Range``/``If-Range`` after a
dropped connection, within a run and across runs (the partial download is kept in the cache).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Protocol
from urllib.parse import unquote, urlsplit

from hal0_lemonade import failpoints
from hal0_lemonade.errors import FetchError, IntegrityError

if TYPE_CHECKING:
    import httpx
    from _typeshed import WriteableBuffer

CHUNK = 256 * 1024
NET_CHUNK = 64 * 1024
Progress = Callable[[int, "int | None"], None]


class Body(Protocol):
    """Where the bytes come from: ``read`` returns b"" at the end."""

    total: int | None

    def read(self, size: int) -> bytes: ...

    def close(self) -> None: ...


def is_remote(artifact: str) -> bool:
    return urlsplit(artifact).scheme in {"http", "https"}


def local_path(artifact: str) -> Path:
    parts = urlsplit(artifact)
    if parts.scheme == "file":
        if parts.netloc not in {"", "localhost"}:
            raise FetchError(f"file URL with a remote host is not supported: {artifact}")
        return Path(unquote(parts.path))
    if parts.scheme and len(parts.scheme) > 1:
        raise FetchError(
            f"unsupported artifact scheme {parts.scheme!r}: {artifact}",
            hint="use an http(s):// or file:// URL, or a plain path",
        )
    return Path(artifact)


class FileBody:
    def __init__(self, path: Path) -> None:
        try:
            self._fh: BinaryIO = path.open("rb")
        except FileNotFoundError as exc:
            raise FetchError(f"artifact not found: {path}") from exc
        except IsADirectoryError as exc:
            raise FetchError(f"artifact is a directory, not an archive: {path}") from exc
        except PermissionError as exc:
            raise FetchError(f"artifact is not readable: {path}") from exc
        self.total: int | None = os.fstat(self._fh.fileno()).st_size

    def read(self, size: int) -> bytes:
        return self._fh.read(size)

    def close(self) -> None:
        self._fh.close()


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
        # httpx costs ~100 ms to import: only paid when something is downloaded.
        import httpx

        self._httpx = httpx
        self.url = url
        self.offset = offset  # bytes of the artifact delivered so far (incl. a kept prefix)
        self.validator = validator
        self.total: int | None = None
        self._attempts = attempts
        self._client = httpx.Client(
            follow_redirects=True,
            max_redirects=10,
            timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
            trust_env=True,  # HTTPS_PROXY / HTTP_PROXY / NO_PROXY
            headers={"User-Agent": "hal0-lemonade", "Accept-Encoding": "identity"},
        )
        self._timeout = timeout
        self._resp: httpx.Response | None = None
        self._chunks: Iterator[bytes] = iter(())
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
    def _connect(self) -> None:
        httpx = self._httpx
        delay = 0.25
        last: str = ""
        for attempt in range(self._attempts):
            if attempt:
                time.sleep(delay)
                delay = min(delay * 2, 2.0)
            headers = {}
            if self.offset:
                headers["Range"] = f"bytes={self.offset}-"
                if self.validator:
                    headers["If-Range"] = self.validator
            try:
                request = self._client.build_request("GET", self.url, headers=headers)
                resp = self._client.send(request, stream=True)
            except httpx.TooManyRedirects as exc:
                raise FetchError(f"too many redirects fetching {self.url}") from exc
            except httpx.InvalidURL as exc:
                raise FetchError(f"invalid artifact URL {self.url}: {exc}") from exc
            except httpx.TransportError as exc:
                last = _describe(exc)
                continue
            if resp.status_code >= 500 or resp.status_code == 429:
                last = f"HTTP {resp.status_code}"
                _discard(resp)
                continue
            if resp.status_code == 416 and self.offset and not self._delivered:
                # The kept prefix is no prefix of what the server has now: either it is the
                # whole file already (a run killed before it could rename it), or stale.
                _discard(resp)
                if _content_range_total(resp.headers.get("Content-Range", "")) == self.offset:
                    self.total = self.offset
                    self._chunks = iter(())
                    return
                self._start_over()
                continue
            if resp.status_code not in (200, 206):
                _discard(resp)
                raise FetchError(
                    f"HTTP {resp.status_code} fetching {self.url}",
                    hint="check --version/--artifact; the release may not exist at that URL",
                )
            self._accept(resp)
            return
        raise FetchError(
            f"could not fetch {self.url} after {self._attempts} attempts: {last}",
            hint="check the network, proxy settings (HTTPS_PROXY/NO_PROXY) or use a local "
            "--artifact; a re-run resumes the partial download",
        )

    def _accept(self, resp: httpx.Response) -> None:
        if resp.status_code == 206:
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
        # Small chunks: bytes the transport received are handed on (and kept for a resume)
        # before a reset can take a half-filled chunk down with it.
        self._chunks = resp.iter_raw(NET_CHUNK)

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

    def _next_chunk(self) -> bytes | None:
        httpx = self._httpx
        last = ""
        for _ in range(self._attempts):
            try:
                chunk = next(self._chunks)
            except StopIteration:
                return None
            except httpx.TimeoutException:
                last = f"no data for {self._timeout:g} s (stalled)"
            except httpx.TransportError as exc:
                last = _describe(exc)
            else:
                failpoints.hit("download.chunk")
                return chunk
            self._close_response()
            self._connect()  # resumes at self.offset (+ buffered skip)
        raise FetchError(
            f"download of {self.url} kept failing mid-transfer at byte {self.offset}: {last}",
            hint="check the network or the mirror; a re-run resumes the partial download "
            "(HAL0_LEMONADE_HTTP_TIMEOUT sets the read timeout in seconds)",
        )

    def _close_response(self) -> None:
        if self._resp is not None:
            with contextlib.suppress(Exception):
                self._resp.close()
            self._resp = None

    def close(self) -> None:
        self._close_response()
        self._client.close()


def _discard(resp: httpx.Response, limit: int = 64 * 1024) -> None:
    """Close an error response, reading a short body first so the connection ends cleanly
    (closing a socket with unread data makes the kernel reset it)."""
    with contextlib.suppress(Exception):
        seen = 0
        for chunk in resp.iter_raw():
            seen += len(chunk)
            if seen > limit:
                break
    resp.close()


def _describe(exc: Exception) -> str:
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


class HashingReader(io.RawIOBase):
    """A readable that hashes every byte and optionally tees new bytes to a file."""

    def __init__(
        self,
        body: Body,
        *,
        prefix: BinaryIO | None = None,
        tee: BinaryIO | None = None,
        progress: Progress | None = None,
    ) -> None:
        super().__init__()
        self._body = body
        self._prefix = prefix
        self._tee = tee
        self._progress = progress
        self._hash = hashlib.sha256()
        self.bytes_read = 0

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        """Up to ``size`` bytes (b"" at the end), as the body returned them: no copy."""
        if size is None or size < 0:
            return self.readall()
        data = b""
        if self._prefix is not None:
            data = self._prefix.read(size)
            if not data:
                self._prefix = None
        if not data:
            data = self._body.read(size)
            if data and self._tee is not None:
                self._tee.write(data)
        n = len(data)
        self._hash.update(data)
        self.bytes_read += n
        if self._progress is not None and n:
            self._progress(self.bytes_read, self._body.total)
        return data

    def readinto(self, buffer: WriteableBuffer) -> int:
        view = memoryview(buffer).cast("B")
        data = self.read(len(view))
        view[: len(data)] = data
        return len(data)

    def drain(self) -> None:
        """Read to the end, so the digest covers bytes the archive reader did not need."""
        while self.read(CHUNK):
            pass

    def hexdigest(self) -> str:
        return self._hash.hexdigest()

    def verify(self, expected: str, *, what: str) -> None:
        self.drain()
        actual = self.hexdigest()
        if actual != expected:
            raise IntegrityError(
                f"SHA-256 mismatch for {what}: expected {expected}, got {actual}",
                hint="the archive is corrupt or not the pinned release; nothing was installed. "
                "Check the mirror, or the --sha256 you gave",
            )


def read_partial_meta(meta: Path) -> dict[str, str]:
    try:
        data = json.loads(meta.read_text())
    except (OSError, ValueError):
        return {}
    return {k: v for k, v in data.items() if isinstance(k, str) and isinstance(v, str)}
