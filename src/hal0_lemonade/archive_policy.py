"""What a release archive may contain: the decision on every member, and its wording.

Every member passes the checks of the stdlib's PEP 706 ``data`` filter -- carried here as our
own code, because Debian 12's Python 3.11.2 predates ``tarfile.data_filter`` -- plus
release-specific ones: one top-level directory (stripped), no setuid/setgid bits, no device or
fifo members, no duplicate or case-colliding names, names within PATH_MAX/NAME_MAX, links that
stay in the tree (symlinks resolved through the archive's own symlinks), bounded size and
entry count, required members present.

This policy decides and words every refusal, on every Python.  Where the stdlib filter exists
it runs after our checks, as a backstop: it can only add a refusal, which is then worded here
too (its own text would name a path on the host).  Messages name the member as it appears in
the archive.
"""

from __future__ import annotations

import copy
import os
import posixpath
import tarfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from hal0_lemonade.archive_links import LinkTree
from hal0_lemonade.errors import ArchiveError

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
# Linux's limits for a path (with its terminating NUL) and for one component of it.  They also
# bound what the bookkeeping below keeps per entry.
PATH_MAX = 4096
NAME_MAX = 255
_SPECIAL = {
    tarfile.CHRTYPE: "character device",
    tarfile.BLKTYPE: "block device",
    tarfile.FIFOTYPE: "fifo",
}
# The stdlib filter's refusals in our words: its messages carry the host path of the tree.
_STDLIB_WHY = {
    "AbsolutePathError": "an absolute path",
    "OutsideDestinationError": "a path outside the release tree",
    "SpecialFileError": "a special file",
    "AbsoluteLinkError": "a link to an absolute path",
    "LinkOutsideDestinationError": "a link that leads outside the release tree",
}
# Global PAX records stay in force for the rest of the archive, and every later member with a
# PAX header of its own gets a copy of them all.
MAX_GLOBAL_RECORDS = 64
MAX_GLOBAL_BYTES = 1 << 20
UNSOUND = "the archive is not a sound Lemonade release; nothing was installed"
_SHOWN = 200  # characters of a name a message quotes (a hostile one may be a MiB long)


class Limits(NamedTuple):
    # Lemonade 10.6 unpacks to ~200 MB in ~300 entries; these leave an order of magnitude.
    # max_total_bytes caps the compressed archive as well as what it unpacks to.
    max_total_bytes: int = 4 << 30
    max_entries: int = 20_000


class FileRecord(NamedTuple):
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


def shown(text: str) -> str:
    """``text`` quoted for a one-line message, its middle cut out when it is very long."""
    if len(text) <= _SHOWN:
        return repr(text)
    return f"{text[: _SHOWN // 2]!r}...{text[-_SHOWN // 4 :]!r} ({len(text)} characters)"


def refuse(member: str, why: str) -> ArchiveError:
    return ArchiveError(f"refusing archive member {shown(member)}: {why}", hint=UNSOUND)


def check_global_headers(member: tarfile.TarInfo, records: Mapping[str, str]) -> None:
    """Refuse ``member`` if the global PAX records in force before it pile up too high."""
    if len(records) > MAX_GLOBAL_RECORDS or (
        sum(len(k) + len(v) for k, v in records.items()) > MAX_GLOBAL_BYTES
    ):
        raise refuse(
            member.name,
            f"the global PAX headers before it hold more than {MAX_GLOBAL_RECORDS} records "
            f"or {MAX_GLOBAL_BYTES} bytes",
        )


def split(name: str) -> tuple[str, str]:
    """Return (top-level dir, path below it), refusing names that could leave the tree."""
    if not name or "\x00" in name or "\\" in name:
        raise refuse(name, "invalid name")
    if name.startswith("/"):
        raise refuse(name, "absolute path")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if not parts:
        raise refuse(name, "empty path")
    if ".." in parts:
        raise refuse(name, "path traversal ('..')")
    return parts[0], "/".join(parts[1:])


def _too_long(path: str) -> str | None:
    """Why ``path`` is longer than Linux takes, or None."""
    raw = os.fsencode(path)  # tarfile decoded it with the file system's encoding
    if len(raw) >= PATH_MAX:
        return f"is {len(raw)} bytes long, PATH_MAX is {PATH_MAX}"
    longest = max(map(len, raw.split(b"/")))
    if longest > NAME_MAX:
        return f"has a component of {longest} bytes, NAME_MAX is {NAME_MAX}"
    return None


class Admitted(NamedTuple):
    rel: str  # the path below the top-level directory ("" for that directory itself)
    new_dirs: list[str]  # directories to create first, outermost first
    link: str = ""  # a hard link's target, below the top-level directory


class Policy:
    """Decides on each member in archive order, and keeps what it needs to: the tree so far."""

    def __init__(self, dest: Path, limits: Limits) -> None:
        self._dest = os.fspath(dest)
        self.limits = limits
        self.out = Extracted()
        self._seen: set[str] = set()
        self._folded: dict[str, str] = {}
        self._tree = LinkTree()
        self._link_names: dict[str, str] = {}  # symlink -> its name in the archive

    def admit(self, m: tarfile.TarInfo) -> Admitted:
        """Check ``m`` and record it as extracted; raises the refusal."""
        out = self.out
        out.entries += 1
        if out.entries > self.limits.max_entries:
            raise refuse(m.name, f"more than {self.limits.max_entries} entries")
        if why := _too_long(m.name):
            raise refuse(m.name, f"name {why}")
        top, rest = split(m.name)
        if not out.top:
            out.top = top
        elif top != out.top:
            raise refuse(m.name, f"a second top-level entry besides {out.top!r}")
        if not rest:
            if not m.isdir():
                raise refuse(m.name, "expected one top-level directory, found a file")
            return Admitted("", [])
        new_dirs = self._check_common(m, rest)
        link = self._check_kind(m, rest, new_dirs)
        if len(out.dirs) + len(new_dirs) > self.limits.max_entries:
            raise refuse(m.name, f"more than {self.limits.max_entries} directories")
        self._stdlib_backstop(m, rest, link)
        self._record(m, rest, new_dirs)
        return Admitted(rest, new_dirs, link)

    def _check_common(self, m: tarfile.TarInfo, rest: str) -> list[str]:
        """The checks for every member below the top; returns the directories it needs."""
        if rest in self._seen:
            raise refuse(m.name, "duplicate member")
        if rest in self.out.dirs and not m.isdir():
            raise refuse(m.name, "a directory of that name is already in the archive")
        folded = rest.casefold()
        if folded in self._folded and self._folded[folded] != rest:
            raise refuse(m.name, f"name collides with {self._folded[folded]!r} ignoring case")
        for bit, what in ((0o4000, "setuid"), (0o2000, "setgid"), (0o1000, "sticky")):
            if m.mode & bit:
                raise refuse(m.name, f"{what} bit set (mode {m.mode:o})")
        if m.issparse():
            raise refuse(m.name, "sparse file")
        if rest.split("/", 1)[0].startswith(FORBIDDEN_PREFIXES):
            raise refuse(m.name, "desktop/tray component, not the embeddable server")
        if any(rest == d or rest.startswith(d + "/") for d in FORBIDDEN_DIRS):
            raise refuse(m.name, "the desktop web app, not part of the embeddable server")
        # Up from the parent to the first directory already made: those above it were
        # checked when it was made, so a deep tree costs its depth once, not per member.
        new_dirs = []
        parent = posixpath.dirname(rest)
        while parent and parent not in self.out.dirs:
            if parent in self.out.links:
                raise refuse(m.name, "path goes through a symlink")
            if parent in self.out.files:
                raise refuse(m.name, "path goes through a file")
            new_dirs.append(parent)
            parent = posixpath.dirname(parent)
        new_dirs.reverse()
        return new_dirs

    def _check_kind(self, m: tarfile.TarInfo, rest: str, new_dirs: list[str]) -> str:
        """The checks of the member's own type; returns a hard link's target."""
        if m.isdir():
            if rest not in self.out.dirs:  # else made already, for a member below it
                new_dirs.append(rest)
        elif m.isreg():
            self.out.total_bytes += m.size
            if self.out.total_bytes > self.limits.max_total_bytes:
                raise refuse(m.name, f"unpacks to more than {self.limits.max_total_bytes} bytes")
        elif m.issym():
            self._check_symlink(m, rest)
        elif m.islnk():
            return self._check_hardlink(m)
        else:
            raise refuse(m.name, f"{_SPECIAL.get(m.type, 'special file')} member")
        return ""

    def _check_symlink(self, m: tarfile.TarInfo, rest: str) -> None:
        target = m.linkname
        if not target or target.startswith("/"):
            raise refuse(m.name, f"symlink to absolute or empty target {shown(target)}")
        if "\x00" in target:
            raise refuse(m.name, "symlink target with a NUL byte")
        if why := _too_long(target):
            raise refuse(m.name, f"symlink target {why}")
        resolved = posixpath.normpath(posixpath.join(posixpath.dirname(rest), target))
        if resolved == ".." or resolved.startswith("../"):
            raise refuse(m.name, f"symlink escapes the release tree ({shown(target)})")
        # Through the symlinks extracted so far (the stdlib's backstop sees those on disk);
        # finish() checks every link again once the tree is complete.
        if why := self._tree.why_not(rest, target):
            raise refuse(m.name, f"symlink target {shown(target)} {why}")

    def _check_hardlink(self, m: tarfile.TarInfo) -> str:
        leaves = f"hard link leaves the release tree ({shown(m.linkname)})"
        if why := _too_long(m.linkname):
            raise refuse(m.name, f"hard link target {why}")
        try:
            top, target = split(m.linkname)
        except ArchiveError:
            raise refuse(m.name, leaves) from None
        if top != self.out.top:
            raise refuse(m.name, leaves)
        if target not in self.out.files:
            raise refuse(
                m.name, f"hard link to {shown(m.linkname)}, not a file earlier in the tree"
            )
        return target

    def _stdlib_backstop(self, m: tarfile.TarInfo, rest: str, link: str) -> None:
        """The stdlib's ``data`` filter, where it exists (3.11.4+), after our own checks."""
        data_filter = getattr(tarfile, "data_filter", None)
        if data_filter is None:
            return
        seen = copy.copy(m)  # as extracted: below the top directory, a hard link's target too
        seen.name, seen.linkname = rest, link or m.linkname
        try:
            data_filter(seen, self._dest)
        except tarfile.FilterError as exc:
            why = _STDLIB_WHY.get(type(exc).__name__, type(exc).__name__)
            raise refuse(m.name, f"the stdlib data filter rejects it as {why}") from exc

    def _record(self, m: tarfile.TarInfo, rest: str, new_dirs: list[str]) -> None:
        folded = rest.casefold()
        self._seen.add(rest)
        self._folded[folded] = rest
        for d in new_dirs:
            self.out.dirs.add(d)
            self._tree.add(d, is_dir=True)
        if m.issym():
            self.out.links[rest] = m.linkname
            self._link_names[rest] = m.name
            self._tree.add(rest, target=m.linkname)
        elif not m.isdir():
            self._tree.add(rest)

    def finish(self) -> Extracted:
        """The checks that need the whole tree; the record of what was extracted."""
        out = self.out
        if not out.entries:
            raise ArchiveError(
                "the archive holds no files", hint="download it again; nothing was installed"
            )
        # Again, now that every link is in the tree: a link may lead through a later one.
        for rel, target in out.links.items():
            if why := self._tree.why_not(rel, target):
                raise refuse(self._link_names[rel], f"symlink target {shown(target)} {why}")
        for required in REQUIRED_FILES:
            if required not in out.files:
                what = "a symlink" if required in out.links else "missing"
                if required in out.dirs:
                    what = "a directory"
                raise ArchiveError(
                    f"not a Lemonade release: {required} is {what}",
                    hint="the archive must hold lemond, lemonade, LICENSE and resources/*.json "
                    "under one top-level directory",
                )
        if not out.files["lemond"].mode & 0o111:
            raise ArchiveError("not a Lemonade release: lemond is not executable")
        return out
