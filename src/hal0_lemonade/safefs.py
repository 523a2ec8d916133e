"""The one place where root touches what the ``hal0`` account owns: ``/var/lib/hal0`` and below.

lemond runs as ``hal0`` and downloads and runs backends and models from the internet, so
everything ``hal0`` can write is hostile input to root: any name under its home may be
swapped, at any instant, for a symlink to ``/etc/shadow``, a FIFO, a hard link, a directory, or
a 400 MB sparse file.  The rules here are systemd-tmpfiles' (``chase.c`` with ``CHASE_SAFE``,
``path_open_safe``), learnt from CVE-2018-6954:

* Walk from the install root one component at a time, each opened with
  ``O_DIRECTORY|O_NOFOLLOW`` relative to the one before (``dir_fd=``): a symlink anywhere on the
  way is never followed.  The components above ``/var/lib/hal0`` must be owned by root (or by
  whoever runs the installer, for a sandbox root) and not writable by anyone else: an
  unprivileged owner there would be an unsafe path transition.
* Under the home, directories are changed only through their own fds (``fchown``/``fchmod``);
  files are never changed in place: they are written new (``O_CREAT|O_EXCL|O_NOFOLLOW``) and
  renamed over the old name, which replaces a planted symlink rather than following it.
* A file is read only after ``lstat`` says it is a regular file, then opened with
  ``O_NOFOLLOW|O_NONBLOCK|O_NOCTTY`` (a FIFO swapped in between cannot block us), and ``fstat``
  must confirm the same inode, one link (no hard link to a file elsewhere) and a size under
  the cap before a byte is read.
* An object of the wrong kind (:class:`UnexpectedObjectError`) is never read or followed.
  ``install`` moves it aside in its own directory (``NAME.unsafe-XXXXXXXX``, kept as
  evidence) and puts a sound object in its place; ``status`` and ``doctor`` report it as a
  failure.  Either way the operator reads one line that names the path and what it may mean.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Iterator, Sequence
from typing import NamedTuple

from hal0_lemonade import failpoints, fsops
from hal0_lemonade.errors import Hal0Error
from hal0_lemonade.layout import HostPath, Layout

# Above the home: /var/lib.  The home and the dirs in it belong to hal0.
HOME_PARENTS = ("var", "lib")
HOME = "hal0"
COMPROMISE = "this may mean the daemon's account (hal0) is compromised"
UNSAFE_TAG = "unsafe"
DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
_KINDS = {
    stat.S_IFLNK: "a symlink",
    stat.S_IFIFO: "a FIFO",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFSOCK: "a socket",
    stat.S_IFDIR: "a directory",
    stat.S_IFREG: "a regular file",
}


def kind(mode: int) -> str:
    return _KINDS.get(stat.S_IFMT(mode), "a special file")


REPAIR = (
    "it moves each unsound object aside as NAME.unsafe-XXXXXXXX and restores a sound one; "
    "look at what lemond ran before trusting the host"
)


class UnsafePathError(Hal0Error):
    """Something another party controls stands where root expected its own object."""


class UnexpectedObjectError(UnsafePathError):
    """An object of the wrong kind (or shape) under the hal0 home."""

    def __init__(self, path: HostPath | str, what: str, expected: str) -> None:
        super().__init__(
            f"{path} is {what}, not {expected}; it was not followed or read ({COMPROMISE})",
            hint=f"`hal0-lemonade install`: {REPAIR}",
        )
        self.path = str(path)
        self.what = what


class Owner(NamedTuple):
    """Who the hal0 tree belongs to: the account's uid/gid (-1 before it exists)."""

    uid: int = -1
    gid: int = -1

    def trusted(self, uid: int) -> bool:
        """A directory under the home may be owned by hal0 or by root (not yet chowned)."""
        return uid in (0, os.geteuid()) or (self.uid != -1 and uid == self.uid)


def _trusted_anchor(uid: int) -> bool:
    return uid in (0, os.geteuid())


@contextlib.contextmanager
def closing(fd: int) -> Iterator[int]:
    try:
        yield fd
    finally:
        os.close(fd)


def host_path(layout: Layout, parts: Sequence[str]) -> HostPath:
    return layout.at("/" + "/".join(parts))


def open_root_dir(layout: Layout, parts: Sequence[str], *, create: bool) -> int:
    """An fd on ``/<parts...>`` under the root (``/var/lib``, ``/run``), every component
    opened unfollowed and checked to be root's own and writable by root only; missing ones
    are made (0755) with ``create``.  The caller closes the fd."""
    fd = os.open(layout.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    walked: list[str] = []
    try:
        for name in parts:
            walked.append(name)
            try:
                child = os.open(name, DIR_FLAGS, dir_fd=fd)
            except FileNotFoundError:
                if not create:
                    raise
                with contextlib.suppress(FileExistsError):
                    os.mkdir(name, 0o755, dir_fd=fd)
                os.fsync(fd)  # a new directory is an entry of its parent: durable by its fsync
                child = os.open(name, DIR_FLAGS, dir_fd=fd)
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise UnsafePathError(
                        f"{host_path(layout, walked)} is not a directory (a symlink or a file); "
                        "refusing to walk through it",
                        hint="it must be a root-owned directory; fix the host by hand",
                    ) from None
                raise
            os.close(fd)
            fd = child
            _check_anchor(host_path(layout, walked), os.fstat(fd))
    except BaseException:
        os.close(fd)
        raise
    return fd


def _check_anchor(host: HostPath, st: os.stat_result) -> None:
    """A component above the home must be root's and writable by root only (or sticky)."""
    shared = st.st_mode & 0o022 and not st.st_mode & stat.S_ISVTX
    if not _trusted_anchor(st.st_uid) or shared:
        raise UnsafePathError(
            f"{host} is owned by uid {st.st_uid} or writable by others "
            f"(mode {stat.S_IMODE(st.st_mode):o}): another user could steer root there",
            hint="it must be owned by root and not group- or world-writable",
        )


def open_child_dir(parent: int, name: str, host: HostPath, owner: Owner) -> int:
    """``name`` in ``parent`` as a directory fd; :class:`UnexpectedObjectError` if not one."""
    try:
        fd = os.open(name, DIR_FLAGS, dir_fd=parent)
    except OSError as exc:
        if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
            raise
        st = os.stat(name, dir_fd=parent, follow_symlinks=False)
        raise UnexpectedObjectError(host, kind(st.st_mode), "a directory") from None
    st = os.fstat(fd)
    if not owner.trusted(st.st_uid):
        os.close(fd)
        raise UnsafePathError(
            f"{host} is owned by uid {st.st_uid}, neither root nor {HOME} ({COMPROMISE})",
            hint=f"`chown -R {HOME}:{HOME} {host}` once you have checked its content",
        )
    return fd


def quarantine(parent: int, name: str) -> str:
    """Move the object at ``name`` aside in its own directory; the new name."""
    aside = f"{name}.{UNSAFE_TAG}-{fsops.random_hex(4)}"
    os.rename(name, aside, src_dir_fd=parent, dst_dir_fd=parent)
    return aside


@contextlib.contextmanager
def open_dir(layout: Layout, parts: Sequence[str], owner: Owner) -> Iterator[int]:
    """An fd on ``/var/lib/hal0/<parts...>`` (``parts`` may be empty: the home), read-only
    walk: raises FileNotFoundError, :class:`UnexpectedObjectError` or :class:`UnsafePathError`."""
    fd = open_root_dir(layout, HOME_PARENTS, create=False)
    walked = [*HOME_PARENTS]
    try:
        for name in (HOME, *parts):
            walked.append(name)
            child = open_child_dir(fd, name, host_path(layout, walked), owner)
            os.close(fd)
            fd = child
    except BaseException:
        os.close(fd)
        raise
    with closing(fd):
        yield fd


class FileRead(NamedTuple):
    """What reading a file under the home found: bytes, or why there are none."""

    raw: bytes | None  # None: missing or not read
    problem: str = ""  # non-empty: exists but was not read (or the walk to it failed)
    unsafe: bool = False  # the problem is an object of the wrong kind: a FAIL, maybe an attack
    mode: int | None = None
    uid: int | None = None


def read_file(
    layout: Layout, parts: Sequence[str], name: str, owner: Owner, *, cap: int
) -> FileRead:
    """The bytes of ``/var/lib/hal0/<parts>/<name>``, read without being steered (see above)."""
    host = host_path(layout, [*HOME_PARENTS, HOME, *parts, name])
    try:
        with open_dir(layout, parts, owner) as parent:
            return _read_in(parent, name, host, cap)
    except FileNotFoundError:
        return FileRead(None)
    except UnsafePathError as exc:
        return FileRead(None, exc.message, unsafe=True)
    except PermissionError:
        return FileRead(None, "not readable (run as root)")


def _read_in(parent: int, name: str, host: HostPath, cap: int) -> FileRead:
    regular = "a regular file"
    before = os.stat(name, dir_fd=parent, follow_symlinks=False)
    if not stat.S_ISREG(before.st_mode):
        raise UnexpectedObjectError(host, kind(before.st_mode), regular)
    try:
        fd = os.open(name, _READ_FLAGS, dir_fd=parent)
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # swapped for a symlink since the lstat
            raise UnexpectedObjectError(host, "a symlink", regular) from None
        raise
    with closing(fd):
        st = os.fstat(fd)
        if (st.st_dev, st.st_ino) != (before.st_dev, before.st_ino) or not stat.S_ISREG(st.st_mode):
            raise UnexpectedObjectError(host, "an object swapped while it was opened", regular)
        if st.st_nlink != 1:
            what = f"a file with {st.st_nlink} hard links"
            raise UnexpectedObjectError(host, what, "a file of its own")
        if st.st_size > cap:
            what = f"a file of {st.st_size} bytes"
            raise UnexpectedObjectError(host, what, f"a file of at most {cap} bytes")
        chunks: list[bytes] = []
        left = cap + 1  # a file that grew past the cap after fstat is cut, and noticed
        while left > 0 and (chunk := os.read(fd, min(left, 1 << 16))):
            chunks.append(chunk)
            left -= len(chunk)
        raw = b"".join(chunks)
        if len(raw) > cap:
            raise UnexpectedObjectError(host, "a file growing past the cap", f"<= {cap} bytes")
        return FileRead(raw, "", False, stat.S_IMODE(st.st_mode), st.st_uid)


def write_file(
    layout: Layout,
    parts: Sequence[str],
    name: str,
    data: bytes,
    *,
    mode: int,
    owner: Owner,
    aside: bool = False,
) -> list[str]:
    """Atomically make ``/var/lib/hal0/<parts>/<name>`` hold ``data`` (temp file in the same
    directory, written, synced, owned, renamed over the name, directory synced).

    Whatever was there is replaced, never followed; an object of the wrong kind (or, with
    ``aside``, whatever is there: a file found unsound when read) is first moved aside and
    named in the returned list.
    """
    notes: list[str] = []
    host = host_path(layout, [*HOME_PARENTS, HOME, *parts, name])
    with open_dir(layout, parts, owner) as parent:
        try:
            st = os.stat(name, dir_fd=parent, follow_symlinks=False)
        except FileNotFoundError:
            pass
        else:
            if aside or not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:
                what = kind(st.st_mode)
                if stat.S_ISREG(st.st_mode) and st.st_nlink != 1:
                    what = "a hard link"
                elif aside and stat.S_ISREG(st.st_mode):
                    what = f"an unsound file ({st.st_size} bytes)"
                moved = quarantine(parent, name)
                notes.append(f"moved {what} at {host} aside to {moved} ({COMPROMISE})")
        _clean_temps(parent, name)
        tmp = f".{name}.tmp-{fsops.random_hex(4)}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o600, dir_fd=parent)  # fmt: skip
        try:
            with closing(fd):
                half = len(data) // 2
                _write_all(fd, data[:half])
                failpoints.hit(f"write.{name}.partial")  # a half-written temp file
                _write_all(fd, data[half:])
                os.fchmod(fd, mode)
                if owner.uid != -1:
                    os.fchown(fd, owner.uid, owner.gid)
                os.fsync(fd)
            failpoints.hit(f"write.{name}.synced")
            os.replace(tmp, name, src_dir_fd=parent, dst_dir_fd=parent)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp, dir_fd=parent)
            raise
        failpoints.hit(f"write.{name}.renamed")
        os.fsync(parent)
    return notes


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _clean_temps(parent: int, name: str) -> None:
    """Remove what a killed run left of our temp names for ``name``: only non-directories
    (unlinking a planted symlink removes the link, not its target), and only our pattern."""
    prefix = f".{name}.tmp-"
    for entry in os.listdir(parent):
        rest = entry.removeprefix(prefix)
        if rest == entry or len(rest) != 8 or any(c not in "0123456789abcdef" for c in rest):
            continue
        with contextlib.suppress(OSError):  # a directory planted there is left alone
            if not stat.S_ISDIR(os.stat(entry, dir_fd=parent, follow_symlinks=False).st_mode):
                os.unlink(entry, dir_fd=parent)
