"""Streaming, policy-checked extraction of a Lemonade release archive into a staging dir.

The archive is read once, as it arrives, through the pipeline of :mod:`archive_stream`
(read, inflate, parse: three threads joined by small bounded queues).  Every member is decided
on by :mod:`archive_policy` before anything of it touches the disk; this module writes what it
admits.  The gzip layer is ours too, read to its end, so a bad CRC or length, a truncated
stream or trailing garbage is refused even where no digest was pinned.

The bomb caps are :class:`Limits`: the defaults, or what ``HAL0_LEMONADE_MAX_UNPACKED_BYTES``
and ``HAL0_LEMONADE_MAX_ENTRIES`` set (read by :mod:`hal0_lemonade.environment`).
"""

from __future__ import annotations

import errno
import gzip
import hashlib
import os
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO, cast

from hal0_lemonade import failpoints, fsops
from hal0_lemonade.archive_policy import (
    FORBIDDEN_DIRS,
    FORBIDDEN_PREFIXES,
    REQUIRED_FILES,
    UNSOUND,
    Extracted,
    FileRecord,
    Limits,
    Policy,
    check_global_headers,
    refuse,
)
from hal0_lemonade.archive_stream import (
    GZIP_MAGIC,
    INFLATE_ERRORS,
    MAX_HEADER_BYTES,
    Feed,
    HeaderTooLargeError,
    InflateError,
    Inflater,
    Prefetch,
)
from hal0_lemonade.errors import ArchiveError

__all__ = [
    "FORBIDDEN_DIRS",
    "FORBIDDEN_PREFIXES",
    "REQUIRED_FILES",
    "Extracted",
    "FileRecord",
    "Limits",
    "extract",
]

# A file this large has its writeback started as soon as it is written (fsops.start_writeback):
# the real release's two binaries.  Not every file: for the 200 MB bench release's 300 assets
# of 400 KB the calls took 44 ms of the writing thread, and the early flushes cover them.
WRITEBACK_MIN = 1 << 20


class _Writer:
    """Writes each member the policy admits into ``dest``."""

    def __init__(self, dest: Path, limits: Limits, data: Feed) -> None:
        self.dest = dest
        # Files are opened by plain string paths: a pathlib join per member cost ~10 ms of
        # the writing thread's CPU for a release, and that thread is on the critical path.
        self._prefix = os.fspath(dest) + "/"
        self.policy = Policy(dest, limits)
        self.data = data

    def member(self, m: tarfile.TarInfo) -> None:
        rel, new_dirs, link = self.policy.admit(m)
        try:
            for d in new_dirs:
                (self.dest / d).mkdir(mode=0o755)
            if m.isreg():
                self._file(m, rel)
            elif m.issym():
                (self.dest / rel).symlink_to(m.linkname)
            elif m.islnk():
                os.link(self._prefix + link, self._prefix + rel, follow_symlinks=False)
                self.policy.out.files[rel] = self.policy.out.files[link]
        except OSError as exc:
            if exc.errno == errno.ENAMETOOLONG:  # the path of the staging dir counts too
                raise refuse(m.name, "path too long to extract here (ENAMETOOLONG)") from exc
            raise

    def _file(self, m: tarfile.TarInfo, rel: str) -> None:
        mode = 0o755 if m.mode & 0o111 else 0o644
        digest = hashlib.sha256()
        # Created with its final mode (extract() runs under umask 0): no fchmod, which is one
        # more inode update that can wait behind a journal commit of the early flushes.
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
        fd = os.open(self._prefix + rel, flags, mode)
        try:
            # The member's bytes straight from the inflated chunks: no copies on the way.
            self.data.seek(m.offset_data)
            for view in self.data.views(m.size):
                digest.update(view)
                left = view
                while left:
                    left = left[os.write(fd, left) :]
            if m.size >= WRITEBACK_MIN:
                fsops.start_writeback(fd)
        finally:
            os.close(fd)
        self.policy.out.files[rel] = FileRecord(m.size, digest.hexdigest(), mode)


def extract(stream: BinaryIO, dest: Path, limits: Limits | None = None) -> Extracted:
    """Extract ``stream`` (a .tar.gz) into the empty directory ``dest``."""
    limits = limits or Limits()
    head = stream.read(2)  # the gzip magic, checked before anything else
    if not head:
        raise _corrupt("the archive is a zero-byte file")
    if head != GZIP_MAGIC:
        raise _corrupt(f"not a gzip-compressed archive (it starts with {head!r})")
    prefetch = Prefetch(stream)
    inflater = Inflater(cast(BinaryIO, prefetch), head, limits.max_total_bytes)
    data = Feed(inflater)
    writer = _Writer(dest, limits, data)
    prefetch.start()
    inflater.start()
    # Exact modes (0755 dirs and programs, 0644 data) whatever the operator's umask: with
    # umask 077 the release would be unreadable to the hal0 service user.
    umask = os.umask(0)
    try:
        _extract_all(writer, data)
    finally:
        os.umask(umask)
        inflater.stop()
        prefetch.stop()
    return writer.policy.finish()


class _TarFile(tarfile.TarFile):
    members: list[tarfile.TarInfo]  # set in TarFile.__init__; typeshed does not declare it


def _members(data: Feed) -> Iterator[tarfile.TarInfo]:
    """The archive's members, parsed by ``tarfile`` with its reads of header records capped.

    Driven through ``next()``, with the list of members ``TarFile`` keeps emptied each time:
    a hostile archive's headers (up to ``MAX_HEADER_BYTES`` each) are not kept for all its
    members.  Global PAX records stay in force, so they have a cap of their own.
    """
    index, offset = 1, 0  # the member whose headers are being read, and where they start
    try:
        tar = _TarFile(fileobj=data, mode="r")  # type: ignore[arg-type]
        while (member := tar.next()) is not None:  # the first one was read by TarFile()
            tar.members.clear()
            if tar.pax_headers:
                check_global_headers(member, tar.pax_headers)
            yield member
            index, offset, data.header_bytes = index + 1, tar.offset, 0
    except HeaderTooLargeError:
        # No name yet: it would be in the very records that are too large.
        raise ArchiveError(
            f"refusing archive member #{index} (at byte {offset} of the tar stream): "
            f"its header records exceed {MAX_HEADER_BYTES} bytes",
            hint=UNSOUND,
        ) from None


def _extract_all(writer: _Writer, data: Feed) -> None:
    """Every member through the policy, then the gzip stream to its end; errors as ours."""
    try:
        try:
            for member in _members(data):
                failpoints.hit("extract.member")
                writer.member(member)
            # Read the gzip stream to its end: that is where its CRC and length are checked,
            # and where bytes appended after it show up.
            data.drain()
        except InflateError as failed:
            raise failed.exc from None  # the source's or the gzip layer's own error
    except ArchiveError:
        raise
    except gzip.BadGzipFile as exc:
        raise _corrupt(f"unexpected bytes after the end of the gzip stream ({exc})") from exc
    except EOFError as exc:
        raise _corrupt(f"the archive is truncated ({exc})") from exc
    except INFLATE_ERRORS as exc:
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
