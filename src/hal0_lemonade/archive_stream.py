"""The inflated stream of a release archive, produced on two threads while it is consumed.

One thread reads the source (which hashes it and tees it to the download cache as it goes),
a second inflates it, and the consumer (``archive.extract``, on the calling thread) parses the
tar headers and writes the files.  recv, zlib, hashlib and file writes release the GIL on large
buffers, so the stages overlap.  Inflate uses ``zlib_ng`` when it is importable (about 2.5x
faster than the stdlib's zlib, same API and the same checks), stdlib ``zlib`` otherwise.

Nothing here trusts the bytes, which are checked against the pinned digest only at the end,
so nothing may grow with a size they choose:

* at most ``_AHEAD`` compressed chunks of at most ``_IN`` bytes and ``_QUEUE`` inflated chunks
  of at most ``_OUT`` bytes are in flight;
* ``tarfile`` reads each member's header records (PAX, GNU long names, sparse maps) through
  :meth:`Feed.read` in one piece, so that read is capped per member (``MAX_HEADER_BYTES``);
* the compressed input is capped (``Limits.max_total_bytes``), and so are the zero padding
  after a gzip member and the bytes after the tar archive's end (``MAX_TRAILING_BYTES``).
"""

from __future__ import annotations

import contextlib
import gzip
import os
import queue
import tarfile
import threading
from collections.abc import Iterator
from typing import BinaryIO, Protocol

from hal0_lemonade import inflate
from hal0_lemonade.archive_policy import UNSOUND
from hal0_lemonade.errors import ArchiveError

_zlib = inflate.impl  # zlib-ng where importable, else the stdlib's (see inflate)
INFLATE_ERRORS = inflate.ERRORS


class _Decompress(Protocol):
    eof: bool
    unused_data: bytes
    unconsumed_tail: bytes

    def decompress(self, data: bytes, max_length: int = 0, /) -> bytes: ...


_IN = 1 << 20  # compressed bytes asked of the source per read
_OUT = 1 << 20  # the most one inflate call may produce: bounds memory against a bomb
_QUEUE = 8  # inflated chunks in flight between the two threads
_AHEAD = 4  # compressed chunks read ahead of the inflate
GZIP_MAGIC = b"\x1f\x8b"
_TRUNCATED = "Compressed file ended before the end-of-stream marker was reached"
# All the header records of one member.  A release's are a 512-byte block, or three with a
# long name; only a hostile archive needs a PAX header or a sparse map of a MiB.
MAX_HEADER_BYTES = 1 << 20
# Zero padding after a gzip member, and bytes after the tar archive's end.  A tar writer pads
# to its record size (10 KiB by default); more than a MiB of either is not a release.
MAX_TRAILING_BYTES = 1 << 20


class HeaderTooLargeError(Exception):
    """A member's header records passed ``MAX_HEADER_BYTES``: the consumer names the member."""


class StopError(Exception):
    """The consumer gave up: the inflating thread ends quietly."""


class InflateError(Exception):
    """What went wrong on the inflating thread, carried to the consumer.

    Raised there wrapped, so ``tarfile`` (which turns a stdlib ``zlib.error`` met while reading
    a header into its own ``ReadError``) lets it through untouched; ``extract`` unwraps it.
    """

    def __init__(self, exc: BaseException) -> None:
        super().__init__(exc)
        self.exc = exc


_END = b""


class _Stage(threading.Thread):
    """One stage of the pipeline: a thread filling the bounded queue ``chunks``."""

    def __init__(self, name: str, maxsize: int) -> None:
        super().__init__(name=name, daemon=True)
        self.chunks: queue.Queue[bytes | InflateError] = queue.Queue(maxsize=maxsize)
        self._stopping = False

    def stop(self) -> None:
        """End the thread (it stops at its next read or chunk) and wait for it."""
        self._stopping = True
        while self.is_alive():
            with contextlib.suppress(queue.Empty):
                self.chunks.get(timeout=0.05)  # unblocks a put on a full queue
        self.join()


class Prefetch(_Stage):
    """Reads the source ahead on its own thread, so fetching, hashing and teeing the
    compressed bytes overlap the inflate instead of taking turns with it."""

    def __init__(self, source: BinaryIO) -> None:
        super().__init__("hal0-fetch", _AHEAD)
        self._source = source
        self._failed: InflateError | None = None

    def run(self) -> None:
        try:
            while not self._stopping:
                chunk = self._source.read(_IN)
                self.chunks.put(chunk)
                if not chunk:
                    return
        except BaseException as exc:  # handed to the reader, raised there
            self.chunks.put(InflateError(exc))

    def read(self, _size: int = -1) -> bytes:
        """The next chunk as the source returned it; b"" at the end."""
        if self._failed is not None:
            raise self._failed.exc
        item = self.chunks.get()
        if isinstance(item, InflateError):
            self._failed = item
            raise item.exc
        if not item:
            self.chunks.put(item)  # the end stays the end for a later read
        return item


class Inflater(_Stage):
    """Reads the compressed source and inflates it into ``self.chunks``, on its own thread.

    The gzip framing is checked as ``gzip.GzipFile`` checks it: zlib (wbits=31) checks each
    member's header, CRC-32 and length; after a member only zero padding, another member or the
    end may follow, anything else is "Not a gzipped file"; a stream that ends inside a member is
    truncated.  A failure travels through the queue and is raised in the consuming thread.
    """

    def __init__(self, source: BinaryIO, head: bytes, max_compressed: int) -> None:
        super().__init__("hal0-inflate", _QUEUE)
        self._source = source
        self._head = head
        self._read_bytes = len(head)
        self._max_compressed = max_compressed

    def run(self) -> None:
        try:
            self._inflate()
            self._put(_END)
        except StopError:
            pass
        except BaseException as exc:  # handed to the consumer, raised there
            self.chunks.put(InflateError(exc))

    def _put(self, chunk: bytes) -> None:
        self.chunks.put(chunk)
        if self._stopping:
            raise StopError

    def _read(self) -> bytes:
        if self._stopping:
            raise StopError
        data = self._source.read(_IN)
        self._read_bytes += len(data)
        if self._read_bytes > self._max_compressed:
            # Empty gzip members inflate to nothing: only this bounds a source of them.
            raise ArchiveError(
                f"the compressed archive is larger than {self._max_compressed} bytes",
                hint=UNSOUND,
            )
        return data

    def _inflate(self) -> None:
        member: _Decompress | None = _zlib.decompressobj(31)
        data = self._head
        padding = 0  # zero bytes since the last member ended
        while True:
            more = False  # a full output chunk may leave output pending with no input left
            while data or more:
                if member is None:  # between members: zero padding, a member or the end
                    stripped = data.lstrip(b"\0")
                    padding += len(data) - len(stripped)
                    if padding > MAX_TRAILING_BYTES:
                        raise ArchiveError(
                            f"more than {MAX_TRAILING_BYTES} zero bytes after the gzip stream",
                            hint=UNSOUND,
                        )
                    data = stripped
                    if not data:
                        break
                    if len(data) < 2 and (extra := self._read()):
                        data += extra
                        continue
                    if data[:2] != GZIP_MAGIC:
                        raise gzip.BadGzipFile(f"Not a gzipped file ({data[:2]!r})")
                    member, padding = _zlib.decompressobj(31), 0
                out = member.decompress(data, _OUT)
                if out:
                    self._put(out)
                if member.eof:
                    data, member, more = member.unused_data, None, False
                else:
                    data, more = member.unconsumed_tail, len(out) == _OUT
            data = self._read()
            if not data:
                break
        if member is not None:
            raise EOFError(_TRUNCATED)


class Feed:
    """The inflated stream as ``tarfile`` reads it: ``read``/``tell``, forward ``seek``."""

    def __init__(self, inflater: Inflater) -> None:
        self._chunks = inflater.chunks
        self._buf = b""
        self._pos = 0  # in _buf
        self._tell = 0  # in the whole stream
        self._done = False
        self.header_bytes = 0  # read by tarfile for the member it is parsing; reset per member

    def _fill(self) -> bool:
        """Make the next chunk current; False at the end of the stream."""
        while not self._done and self._pos >= len(self._buf):
            item = self._chunks.get()
            if isinstance(item, InflateError):
                self._done = True
                raise item
            if not item:  # _END
                self._done = True
            self._buf, self._pos = item, 0
        return self._pos < len(self._buf)

    def _take(self, size: int) -> memoryview | None:
        if not self._fill():
            return None
        n = min(size, len(self._buf) - self._pos)
        view = memoryview(self._buf)[self._pos : self._pos + n]
        self._pos += n
        self._tell += n
        return view

    def read(self, size: int = -1) -> bytes:
        """What ``tarfile`` reads: header blocks and header records (member data goes through
        :meth:`views`).  Refused before anything is read once a member's headers would pass
        ``MAX_HEADER_BYTES``: tarfile asks for a PAX header's whole payload in one call."""
        if size < 0 or self.header_bytes + size > MAX_HEADER_BYTES:
            raise HeaderTooLargeError
        self.header_bytes += size
        parts = []
        left = size
        while left and (view := self._take(left)) is not None:
            parts.append(view)
            left -= len(view)
        return b"".join(parts)

    def views(self, size: int) -> Iterator[memoryview]:
        """The next ``size`` bytes, as views of the inflated chunks."""
        while size:
            view = self._take(size)
            if view is None:
                raise tarfile.ReadError("unexpected end of data")
            size -= len(view)
            yield view

    def tell(self) -> int:
        return self._tell

    def seek(self, pos: int, whence: int = os.SEEK_SET) -> int:
        if whence != os.SEEK_SET or pos < self._tell:
            raise tarfile.StreamError("seeking backwards is not allowed")
        while self._tell < pos and self._take(pos - self._tell) is not None:
            pass
        return self._tell

    def drain(self) -> None:
        """Read the stream to its end (where the gzip layer checks its CRCs and lengths)."""
        end = self._tell + MAX_TRAILING_BYTES
        while self._take(_OUT) is not None:
            if self._tell > end:
                raise ArchiveError(
                    f"more than {MAX_TRAILING_BYTES} bytes after the end of the tar archive",
                    hint=UNSOUND,
                )
