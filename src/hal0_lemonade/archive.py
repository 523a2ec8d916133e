"""Streaming, policy-checked extraction of a Lemonade release archive into a staging dir.

The archive is read once, as it arrives.  Every member passes the checks of the stdlib's PEP
706 ``data`` filter -- carried here as our own code too, because Debian 12's Python 3.11.2
predates ``tarfile.data_filter`` -- plus release-specific ones: one top-level directory
(stripped), no setuid/setgid bits, no device or fifo members, no duplicate or case-colliding
names, links that stay in the tree, bounded size and entry count, required members present.
The gzip layer is ours too, read to its end, so a bad CRC or length, a truncated stream or
trailing garbage is refused even where no digest was pinned.

One pass, on both cores, in three stages joined by small bounded queues: one thread reads the
source (which hashes it and tees it to the download cache as it goes), a second inflates it,
and the calling thread parses the tar headers and writes and hashes the files.  recv, zlib,
hashlib and file writes release the GIL on large buffers, so the stages overlap.  Inflate
uses ``zlib_ng`` when it is importable (about 2.5x faster than the stdlib's zlib, same API and
the same checks), stdlib ``zlib`` otherwise.
Memory stays flat: at most ``_AHEAD`` compressed chunks of at most ``_IN`` bytes and ``_QUEUE``
inflated chunks of at most ``_OUT`` bytes are in flight.

The bomb caps come from :meth:`Limits.from_env` -- the one place that reads
``HAL0_LEMONADE_MAX_UNPACKED_BYTES`` and ``HAL0_LEMONADE_MAX_ENTRIES``.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import os
import posixpath
import queue
import tarfile
import threading
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Protocol, cast

from hal0_lemonade import failpoints
from hal0_lemonade.errors import ArchiveError, UsageError

try:  # a faster inflate with the stdlib's API and checks; optional
    from zlib_ng import zlib_ng as _zlib
except ImportError:  # pragma: no cover - exercised where zlib-ng is not installed
    _zlib = zlib  # type: ignore[misc]
# zlib_ng's stub types its error class as an instance
_INFLATE_ERRORS: tuple[type[Exception], ...] = (zlib.error, cast(type[Exception], _zlib.error))


class _Decompress(Protocol):
    eof: bool
    unused_data: bytes
    unconsumed_tail: bytes

    def decompress(self, data: bytes, max_length: int = 0, /) -> bytes: ...


REQUIRED_FILES = (
    "lemond",
    "lemonade",
    "LICENSE",
    "resources/server_models.json",
    "resources/backend_versions.json",
    "resources/defaults.json",
)
# Upstream's release smoke test rejects archives carrying the desktop/tray pieces.
FORBIDDEN_PREFIXES = ("lemonade-server", "lemonade-app", "lemonade-tray", "LemonadeServer")
FORBIDDEN_DIRS = ("resources/web-app",)
_IN = 1 << 20  # compressed bytes asked of the source per read
_OUT = 1 << 20  # the most one inflate call may produce: bounds memory against a bomb
_QUEUE = 8  # inflated chunks in flight between the two threads
_AHEAD = 4  # compressed chunks read ahead of the inflate
_GZIP_MAGIC = b"\x1f\x8b"
_TRUNCATED = "Compressed file ended before the end-of-stream marker was reached"
MAX_BYTES_ENV = "HAL0_LEMONADE_MAX_UNPACKED_BYTES"
MAX_ENTRIES_ENV = "HAL0_LEMONADE_MAX_ENTRIES"
_SPECIAL = {
    tarfile.CHRTYPE: "character device",
    tarfile.BLKTYPE: "block device",
    tarfile.FIFOTYPE: "fifo",
}


@dataclass(frozen=True)
class Limits:
    # Lemonade 10.6 unpacks to ~200 MB in ~300 entries; these leave an order of magnitude.
    max_total_bytes: int = 4 << 30
    max_entries: int = 20_000

    @classmethod
    def from_env(cls) -> Limits:
        """The defaults, or the caps set by the two environment variables (tests, odd hosts)."""
        return cls(
            max_total_bytes=_env_int(MAX_BYTES_ENV, cls.max_total_bytes),
            max_entries=_env_int(MAX_ENTRIES_ENV, cls.max_entries),
        )


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    if not raw.isdigit() or int(raw) < 1:
        raise UsageError(f"{name}={raw!r} is not a positive whole number")
    return int(raw)


@dataclass(frozen=True)
class FileRecord:
    size: int
    sha256: str
    mode: int


@dataclass
class Extracted:
    top: str = ""
    files: dict[str, FileRecord] = field(default_factory=dict)
    links: dict[str, str] = field(default_factory=dict)
    dirs: set[str] = field(default_factory=set)
    total_bytes: int = 0
    entries: int = 0


def _refuse(member: str, why: str) -> ArchiveError:
    return ArchiveError(
        f"refusing archive member {member!r}: {why}",
        hint="the archive is not a sound Lemonade release; nothing was installed",
    )


def _split(name: str) -> tuple[str, str]:
    """Return (top-level dir, path below it), refusing names that could leave the tree."""
    if not name or "\x00" in name or "\\" in name:
        raise _refuse(name, "invalid name")
    if name.startswith("/"):
        raise _refuse(name, "absolute path")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if not parts:
        raise _refuse(name, "empty path")
    if ".." in parts:
        raise _refuse(name, "path traversal ('..')")
    return parts[0], "/".join(parts[1:])


class _Extractor:
    def __init__(self, dest: Path, limits: Limits, data: _Feed) -> None:
        self.dest = dest
        # Files are opened by plain string paths: a pathlib join per member cost ~10 ms of
        # the writing thread's CPU for a release, and that thread is on the critical path.
        self._prefix = os.fspath(dest) + "/"
        self.limits = limits
        self.data = data
        self.out = Extracted()
        self._seen: set[str] = set()
        self._folded: dict[str, str] = {}

    def member(self, tar: tarfile.TarFile, m: tarfile.TarInfo) -> None:
        out = self.out
        out.entries += 1
        if out.entries > self.limits.max_entries:
            raise _refuse(m.name, f"more than {self.limits.max_entries} entries")
        top, rest = _split(m.name)
        if not out.top:
            out.top = top
        elif top != out.top:
            raise _refuse(m.name, f"a second top-level entry besides {out.top!r}")
        if not rest:
            if not m.isdir():
                raise _refuse(m.name, "expected one top-level directory, found a file")
            return
        self._check_common(m, rest)
        if m.isdir():
            self._mkdirs(rest)
        elif m.isreg():
            self._file(m, rest)
        elif m.issym():
            self._symlink(m, rest)
        elif m.islnk():
            self._hardlink(m, rest)
        else:
            raise _refuse(m.name, f"{_SPECIAL.get(m.type, 'special file')} member")

    def _check_common(self, m: tarfile.TarInfo, rest: str) -> None:
        if rest in self._seen:
            raise _refuse(m.name, "duplicate member")
        folded = rest.casefold()
        if folded in self._folded and self._folded[folded] != rest:
            raise _refuse(m.name, f"name collides with {self._folded[folded]!r} ignoring case")
        for bit, what in ((0o4000, "setuid"), (0o2000, "setgid"), (0o1000, "sticky")):
            if m.mode & bit:
                raise _refuse(m.name, f"{what} bit set (mode {m.mode:o})")
        if m.issparse():
            raise _refuse(m.name, "sparse file")
        if rest.split("/", 1)[0].startswith(FORBIDDEN_PREFIXES):
            raise _refuse(m.name, "desktop/tray component, not the embeddable server")
        if any(rest == d or rest.startswith(d + "/") for d in FORBIDDEN_DIRS):
            raise _refuse(m.name, "the desktop web app, not part of the embeddable server")
        parent = posixpath.dirname(rest)
        while parent:
            if parent in self.out.links:
                raise _refuse(m.name, "path goes through a symlink")
            if parent in self.out.files:
                raise _refuse(m.name, "path goes through a file")
            parent = posixpath.dirname(parent)
        self._stdlib_filter(m, rest)
        self._seen.add(rest)
        self._folded[folded] = rest

    def _stdlib_filter(self, m: tarfile.TarInfo, rest: str) -> None:
        data_filter = getattr(tarfile, "data_filter", None)
        if data_filter is None:  # Python < 3.11.4: our own checks above and below stand alone
            return
        linkname = m.linkname
        if m.islnk():
            linkname = _split(m.linkname)[1]
        try:
            data_filter(m.replace(name=rest, linkname=linkname, deep=False), str(self.dest))
        except tarfile.FilterError as exc:
            raise _refuse(m.name, f"rejected by the stdlib data filter ({exc})") from exc

    def _mkdirs(self, rel: str) -> None:
        parts = rel.split("/")
        for i in range(1, len(parts) + 1):
            sub = "/".join(parts[:i])
            if sub not in self.out.dirs:
                (self.dest / sub).mkdir(mode=0o755)
                self.out.dirs.add(sub)

    def _file(self, m: tarfile.TarInfo, rest: str) -> None:
        self.out.total_bytes += m.size
        if self.out.total_bytes > self.limits.max_total_bytes:
            raise _refuse(m.name, f"unpacks to more than {self.limits.max_total_bytes} bytes")
        parent = posixpath.dirname(rest)
        if parent:
            self._mkdirs(parent)
        mode = 0o755 if m.mode & 0o111 else 0o644
        digest = hashlib.sha256()
        # Created with its final mode (extract() runs under umask 0): no fchmod, which is one
        # more inode update that can wait behind a journal commit of the early flushes.
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
        fd = os.open(self._prefix + rest, flags, mode)
        try:
            # The member's bytes straight from the inflated chunks: no copies on the way.
            self.data.seek(m.offset_data)
            for view in self.data.views(m.size):
                digest.update(view)
                left = view
                while left:
                    left = left[os.write(fd, left) :]
        finally:
            os.close(fd)
        self.out.files[rest] = FileRecord(m.size, digest.hexdigest(), mode)

    def _symlink(self, m: tarfile.TarInfo, rest: str) -> None:
        target = m.linkname
        if not target or target.startswith("/"):
            raise _refuse(m.name, f"symlink to absolute or empty target {target!r}")
        resolved = posixpath.normpath(posixpath.join(posixpath.dirname(rest), target))
        if resolved == ".." or resolved.startswith("../"):
            raise _refuse(m.name, f"symlink escapes the release tree ({target!r})")
        parent = posixpath.dirname(rest)
        if parent:
            self._mkdirs(parent)
        (self.dest / rest).symlink_to(target)
        self.out.links[rest] = target

    def _hardlink(self, m: tarfile.TarInfo, rest: str) -> None:
        try:
            top, target = _split(m.linkname)
        except ArchiveError:
            raise _refuse(m.name, f"hard link leaves the release tree ({m.linkname!r})") from None
        if top != self.out.top:
            raise _refuse(m.name, f"hard link leaves the release tree ({m.linkname!r})")
        if target not in self.out.files:
            raise _refuse(m.name, f"hard link to {m.linkname!r}, not a file earlier in the tree")
        parent = posixpath.dirname(rest)
        if parent:
            self._mkdirs(parent)
        os.link(self._prefix + target, self._prefix + rest, follow_symlinks=False)
        self.out.files[rest] = self.out.files[target]

    def finish(self) -> Extracted:
        if not self.out.entries:
            raise ArchiveError(
                "the archive holds no files", hint="download it again; nothing was installed"
            )
        for required in REQUIRED_FILES:
            if required not in self.out.files:
                what = "a symlink" if required in self.out.links else "missing"
                if required in self.out.dirs:
                    what = "a directory"
                raise ArchiveError(
                    f"not a Lemonade release: {required} is {what}",
                    hint="the archive must hold lemond, lemonade, LICENSE and resources/*.json "
                    "under one top-level directory",
                )
        if not self.out.files["lemond"].mode & 0o111:
            raise ArchiveError("not a Lemonade release: lemond is not executable")
        return self.out


class _StopError(Exception):
    """The consumer gave up: the inflating thread ends quietly."""


class _InflateError(Exception):
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
        self.chunks: queue.Queue[bytes | _InflateError] = queue.Queue(maxsize=maxsize)
        self._stopping = False

    def stop(self) -> None:
        """End the thread (it stops at its next read or chunk) and wait for it."""
        self._stopping = True
        while self.is_alive():
            with contextlib.suppress(queue.Empty):
                self.chunks.get(timeout=0.05)  # unblocks a put on a full queue
        self.join()


class _Prefetch(_Stage):
    """Reads the source ahead on its own thread, so fetching, hashing and teeing the
    compressed bytes overlap the inflate instead of taking turns with it."""

    def __init__(self, source: BinaryIO) -> None:
        super().__init__("hal0-fetch", _AHEAD)
        self._source = source
        self._failed: _InflateError | None = None

    def run(self) -> None:
        try:
            while not self._stopping:
                chunk = self._source.read(_IN)
                self.chunks.put(chunk)
                if not chunk:
                    return
        except BaseException as exc:  # handed to the reader, raised there
            self.chunks.put(_InflateError(exc))

    def read(self, _size: int = -1) -> bytes:
        """The next chunk as the source returned it; b"" at the end."""
        if self._failed is not None:
            raise self._failed.exc
        item = self.chunks.get()
        if isinstance(item, _InflateError):
            self._failed = item
            raise item.exc
        if not item:
            self.chunks.put(item)  # the end stays the end for a later read
        return item


class _Inflater(_Stage):
    """Reads the compressed source and inflates it into ``self.chunks``, on its own thread.

    The gzip framing is checked as ``gzip.GzipFile`` checks it: zlib (wbits=31) checks each
    member's header, CRC-32 and length; after a member only zero padding, another member or the
    end may follow, anything else is "Not a gzipped file"; a stream that ends inside a member is
    truncated.  A failure travels through the queue and is raised in the consuming thread.
    """

    def __init__(self, source: BinaryIO, head: bytes) -> None:
        super().__init__("hal0-inflate", _QUEUE)
        self._source = source
        self._head = head

    def run(self) -> None:
        try:
            self._inflate()
            self._put(_END)
        except _StopError:
            pass
        except BaseException as exc:  # handed to the consumer, raised there
            self.chunks.put(_InflateError(exc))

    def _put(self, chunk: bytes) -> None:
        self.chunks.put(chunk)
        if self._stopping:
            raise _StopError

    def _read(self) -> bytes:
        if self._stopping:
            raise _StopError
        return self._source.read(_IN)

    def _inflate(self) -> None:
        member: _Decompress | None = _zlib.decompressobj(31)
        data = self._head
        while True:
            more = False  # a full output chunk may leave output pending with no input left
            while data or more:
                if member is None:  # between members: zero padding, a member or the end
                    data = data.lstrip(b"\0")
                    if not data:
                        break
                    if len(data) < 2 and (extra := self._source.read(_IN)):
                        data += extra
                        continue
                    if data[:2] != _GZIP_MAGIC:
                        raise gzip.BadGzipFile(f"Not a gzipped file ({data[:2]!r})")
                    member = _zlib.decompressobj(31)
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


class _Feed:
    """The inflated stream as ``tarfile`` reads it: ``read``/``tell``, forward ``seek``."""

    def __init__(self, inflater: _Inflater) -> None:
        self._chunks = inflater.chunks
        self._buf = b""
        self._pos = 0  # in _buf
        self._tell = 0  # in the whole stream
        self._done = False

    def _fill(self) -> bool:
        """Make the next chunk current; False at the end of the stream."""
        while not self._done and self._pos >= len(self._buf):
            item = self._chunks.get()
            if isinstance(item, _InflateError):
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
        parts = []
        left = size if size >= 0 else 1 << 62
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
        while self._take(_OUT) is not None:
            pass


def extract(stream: BinaryIO, dest: Path, limits: Limits | None = None) -> Extracted:
    """Extract ``stream`` (a .tar.gz) into the empty directory ``dest``."""
    head = stream.read(2)  # the gzip magic, checked before anything else
    if not head:
        raise _corrupt("the archive is a zero-byte file")
    if head != _GZIP_MAGIC:
        raise _corrupt(f"not a gzip-compressed archive (it starts with {head!r})")
    prefetch = _Prefetch(stream)
    inflater = _Inflater(cast(BinaryIO, prefetch), head)
    data = _Feed(inflater)
    extractor = _Extractor(dest, limits or Limits.from_env(), data)
    prefetch.start()
    inflater.start()
    # Exact modes (0755 dirs and programs, 0644 data) whatever the operator's umask: with
    # umask 077 the release would be unreadable to the hal0 service user.
    umask = os.umask(0)
    try:
        _extract_all(extractor, data)
    finally:
        os.umask(umask)
        inflater.stop()
        prefetch.stop()
    return extractor.finish()


def _extract_all(extractor: _Extractor, data: _Feed) -> None:
    """Every member through the policy, then the gzip stream to its end; errors as ours."""
    try:
        try:
            with tarfile.TarFile(fileobj=data, mode="r") as tar:  # type: ignore[arg-type]
                for member in tar:
                    failpoints.hit("extract.member")
                    extractor.member(tar, member)
            # Read the gzip stream to its end: that is where its CRC and length are checked,
            # and where bytes appended after it show up.
            data.drain()
        except _InflateError as failed:
            raise failed.exc from None  # the source's or the gzip layer's own error
    except ArchiveError:
        raise
    except gzip.BadGzipFile as exc:
        raise _corrupt(f"unexpected bytes after the end of the gzip stream ({exc})") from exc
    except EOFError as exc:
        raise _corrupt(f"the archive is truncated ({exc})") from exc
    except _INFLATE_ERRORS as exc:
        text = str(exc)
        if "incorrect data check" in text or "incorrect length check" in text:
            raise _corrupt(f"corrupt compressed data (CRC check failed: {exc})") from exc
        raise _corrupt(f"invalid deflate data in the gzip stream ({exc})") from exc
    except tarfile.TarError as exc:
        if str(exc) == "empty file":
            raise _corrupt("the archive is empty (no tar data inside the gzip stream)") from exc
        raise _corrupt(f"not a tar archive inside the gzip stream ({exc})") from exc


def _corrupt(message: str) -> ArchiveError:
    return ArchiveError(message, hint="download it again; nothing was installed")
