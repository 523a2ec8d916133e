"""Streaming, policy-checked extraction of a Lemonade release archive into a staging dir.

The archive is read once, as it arrives.  Every member passes the checks of the stdlib's PEP
706 ``data`` filter -- carried here as our own code too, because Debian 12's Python 3.11.2
predates ``tarfile.data_filter`` -- plus release-specific ones: one top-level directory
(stripped), no setuid/setgid bits, no device or fifo members, no duplicate or case-colliding
names, links that stay in the tree, bounded size and entry count, required members present.
The gzip layer is ours too (``gzip.GzipFile``, read to its end), so a bad CRC, a truncated
stream or trailing garbage is refused even where no digest was pinned.

The bomb caps come from :meth:`Limits.from_env` -- the one place that reads
``HAL0_LEMONADE_MAX_UNPACKED_BYTES`` and ``HAL0_LEMONADE_MAX_ENTRIES``.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import posixpath
import tarfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, cast

from hal0_lemonade import failpoints
from hal0_lemonade.errors import ArchiveError, UsageError

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
_READ = 1 << 20
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
    def __init__(self, dest: Path, limits: Limits) -> None:
        self.dest = dest
        self.limits = limits
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
            self._file(tar, m, rest)
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

    def _file(self, tar: tarfile.TarFile, m: tarfile.TarInfo, rest: str) -> None:
        self.out.total_bytes += m.size
        if self.out.total_bytes > self.limits.max_total_bytes:
            raise _refuse(m.name, f"unpacks to more than {self.limits.max_total_bytes} bytes")
        parent = posixpath.dirname(rest)
        if parent:
            self._mkdirs(parent)
        mode = 0o755 if m.mode & 0o111 else 0o644
        src = tar.extractfile(m)
        if src is None:
            raise _refuse(m.name, "unreadable file member")
        digest = hashlib.sha256()
        fd = os.open(self.dest / rest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "wb") as dst:
            while chunk := src.read(_READ):
                digest.update(chunk)
                dst.write(chunk)
            os.fchmod(dst.fileno(), mode)
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
        os.link(self.dest / target, self.dest / rest, follow_symlinks=False)
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


class _Counted:
    """Counts the compressed bytes read, to tell a zero-byte file from an empty gzip."""

    def __init__(self, raw: BinaryIO) -> None:
        self.raw = raw
        self.head = raw.read(2)  # the gzip magic, checked before anything else
        self.count = len(self.head)

    def read(self, size: int = -1) -> bytes:
        if self.head:
            data, self.head = self.head, b""
            return data
        data = self.raw.read(size)
        self.count += len(data)
        return data


def extract(stream: BinaryIO, dest: Path, limits: Limits | None = None) -> Extracted:
    """Extract ``stream`` (a .tar.gz) into the empty directory ``dest``."""
    extractor = _Extractor(dest, limits or Limits.from_env())
    counted = _Counted(stream)
    if not counted.count:
        raise _corrupt("the archive is a zero-byte file")
    if counted.head != b"\x1f\x8b":
        raise _corrupt(f"not a gzip-compressed archive (it starts with {counted.head!r})")
    try:
        with gzip.GzipFile(fileobj=cast(BinaryIO, counted), mode="rb") as gz:
            with tarfile.open(fileobj=gz, mode="r|", bufsize=_READ) as tar:
                for member in tar:
                    failpoints.hit("extract.member")
                    extractor.member(tar, member)
            # Read the gzip stream to its end: that is where its CRC and length are checked,
            # and where bytes appended after it show up.
            while gz.read(_READ):
                pass
    except ArchiveError:
        raise
    except gzip.BadGzipFile as exc:
        if "CRC check failed" in str(exc) or "Incorrect length" in str(exc):
            raise _corrupt(f"corrupt compressed data ({exc})") from exc
        raise _corrupt(f"unexpected bytes after the end of the gzip stream ({exc})") from exc
    except EOFError as exc:
        raise _corrupt(f"the archive is truncated ({exc})") from exc
    except zlib.error as exc:
        raise _corrupt(f"invalid deflate data in the gzip stream ({exc})") from exc
    except tarfile.TarError as exc:
        if str(exc).startswith("zlib error"):
            raise _corrupt(f"invalid deflate data in the gzip stream ({exc})") from exc
        if str(exc) == "empty file":
            raise _corrupt("the archive is empty (no tar data inside the gzip stream)") from exc
        raise _corrupt(f"not a tar archive inside the gzip stream ({exc})") from exc
    return extractor.finish()


def _corrupt(message: str) -> ArchiveError:
    return ArchiveError(message, hint="download it again; nothing was installed")
