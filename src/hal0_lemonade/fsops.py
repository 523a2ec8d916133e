"""Crash-safe filesystem primitives.

A file or tree becomes live only by an atomic rename once it is complete and synced, so a
kill at any instant leaves the old state or the new one, never a mix.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import functools
import os
import shutil
from collections.abc import Callable
from pathlib import Path

from hal0_lemonade import failpoints

_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def fsync_dir(path: Path) -> None:
    _fsync_path(path, os.O_RDONLY | os.O_DIRECTORY)


def fsync_file(path: Path) -> None:
    _fsync_path(path, os.O_RDONLY)


def _fsync_path(path: Path, flags: int) -> None:
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def random_hex(nbytes: int) -> str:
    """What ``secrets.token_hex`` returns (os.urandom, hex), without importing ``secrets``:
    it pulls in random, base64 and hmac, a few ms before every install's first byte."""
    return os.urandom(nbytes).hex()


def temp_sibling(path: Path, tag: str = "tmp") -> Path:
    """A hidden name in the same directory, so the final rename stays on one filesystem."""
    return path.with_name(f".{path.name}.{tag}-{random_hex(4)}")


def clean_temp_siblings(path: Path, tag: str = "tmp") -> None:
    """Remove what a killed run left of :func:`temp_sibling` names for ``path``.

    Only our own ``.<name>.<tag>-<hex>`` names: lemond's ``config.json.tmp`` is its own.
    Callers hold the install lock, so no live writer owns these.
    """
    prefix = f".{path.name}.{tag}-"
    try:
        entries = list(path.parent.iterdir())
    except FileNotFoundError:
        return
    for entry in entries:
        rest = entry.name.removeprefix(prefix)
        if rest != entry.name and len(rest) == 8 and all(c in "0123456789abcdef" for c in rest):
            with contextlib.suppress(FileNotFoundError):
                entry.unlink()


def atomic_write(
    path: Path, data: bytes, *, mode: int = 0o644, uid: int = -1, gid: int = -1
) -> None:
    """temp file in the same dir -> write -> fsync -> chmod/chown -> rename -> fsync dir."""
    clean_temp_siblings(path)
    tmp = temp_sibling(path)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "wb") as out:
            half = len(data) // 2
            out.write(data[:half])
            out.flush()
            failpoints.hit(f"write.{path.name}.partial")  # a half-written temp file
            out.write(data[half:])
            out.flush()
            os.fchmod(out.fileno(), mode)
            if uid != -1 or gid != -1:
                os.fchown(out.fileno(), uid, gid)
            os.fsync(out.fileno())
        failpoints.hit(f"write.{path.name}.synced")
        tmp.replace(path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    failpoints.hit(f"write.{path.name}.renamed")
    fsync_dir(path.parent)


def write_new(path: Path, data: bytes, *, mode: int = 0o644) -> None:
    """Create ``path``, which must not exist, holding ``data``: not synced, not renamed.

    Only for files inside a tree that nothing sees yet and that is synced as a whole before
    it is renamed into view (a staging dir): a kill leaves a tree that is thrown away.
    """
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        half = len(data) // 2
        os.write(fd, data[:half])
        failpoints.hit(f"write.{path.name}.partial")  # a half-written file
        view = memoryview(data)[half:]
        while view:
            view = view[os.write(fd, view) :]
        os.fchmod(fd, mode)
    finally:
        os.close(fd)


def make_dirs(path: Path, mode: int = 0o755) -> bool:
    """``mkdir -p``, durably: each directory made is synced into its parent (a new directory's
    name is an entry of the parent, which only the parent's fsync makes durable).  True when
    anything was made."""
    missing: list[Path] = []
    here = path
    while not here.is_dir():
        missing.append(here)
        here = here.parent
    for new in reversed(missing):
        with contextlib.suppress(FileExistsError):
            new.mkdir(mode=mode)
        fsync_dir(new.parent)
    return bool(missing)


def ensure_dir(path: Path, *, mode: int = 0o755, uid: int = -1, gid: int = -1) -> bool:
    """Create ``path`` (and parents) and set its mode/owner; True when anything changed."""
    changed = False
    if not path.is_dir():
        path.mkdir(parents=True, exist_ok=True)
        changed = True
    st = path.stat()
    if st.st_mode & 0o7777 != mode:
        path.chmod(mode)
        changed = True
    if uid not in (-1, st.st_uid) or gid not in (-1, st.st_gid):
        os.chown(path, uid, gid)
        changed = True
    return changed


@functools.cache
def _libc() -> ctypes.CDLL:
    # The C library this process already runs on (not ctypes.util.find_library, which runs
    # ldconfig in a subprocess on every call).
    return ctypes.CDLL(None, use_errno=True)


def libc_function(name: str) -> Callable[..., int] | None:
    """``name`` from the C library, or None where it lacks it (not glibc, old glibc)."""
    func: Callable[..., int] | None = getattr(_libc(), name, None)
    return func


def _renameat2_exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths (Linux RENAME_EXCHANGE); False when unsupported here."""
    renameat2 = libc_function("renameat2")
    if renameat2 is None:
        return False
    rc = renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    if rc == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(a))


def point_symlink(link: Path, target: str) -> Path | None:
    """Make ``link`` a symlink to ``target`` in one atomic step.

    Returns the path a displaced real directory was moved to (a seed-era /opt/lemonade that
    was a plain directory), so the caller can keep it as the previous release.
    """
    clean_temp_siblings(link, "link")
    tmp = temp_sibling(link, "link")
    tmp.symlink_to(target)
    failpoints.hit(f"symlink.{link.name}.staged")
    try:
        if link.is_dir() and not link.is_symlink():
            # rename(2) cannot replace a directory with a symlink; swap them atomically
            # where the kernel and filesystem can, else fall back to two renames.
            if _renameat2_exchange(tmp, link):
                fsync_dir(link.parent)
                return tmp
            displaced = temp_sibling(link, "old")
            link.rename(displaced)
            tmp.rename(link)
            fsync_dir(link.parent)
            return displaced
        tmp.replace(link)
    except BaseException:
        if tmp.is_symlink():
            tmp.unlink()
        raise
    fsync_dir(link.parent)
    return None


_SYNC_FILE_RANGE_WRITE = 2


@functools.cache
def _sync_file_range() -> Callable[..., int] | None:
    func = getattr(_libc(), "sync_file_range", None)  # a ctypes function: its argtypes set
    if func is not None:
        func.argtypes = [ctypes.c_int, ctypes.c_longlong, ctypes.c_longlong, ctypes.c_uint]
    found: Callable[..., int] | None = func
    return found


def start_writeback(fd: int) -> None:
    """Ask the kernel to start writing ``fd``'s dirty pages now, without waiting for them
    (``sync_file_range(SYNC_FILE_RANGE_WRITE)``).  Not durability: the ``syncfs`` before a
    tree goes live still decides.  It lets the disk work while the next file is inflated, so
    that flush finds little left (~7 ms to ~0.4 ms for a real 10 MB release here)."""
    func = _sync_file_range()
    if func is not None:
        func(fd, 0, 0, _SYNC_FILE_RANGE_WRITE)  # best effort: errors are syncfs's to report


def syncfs(path: Path) -> None:
    """Flush the filesystem holding ``path`` (one call instead of an fsync per file)."""
    func = libc_function("syncfs")
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        if func is None or func(fd) != 0:
            os.sync()
    finally:
        os.close(fd)


def remove_tree(path: Path) -> None:
    """Remove a file, symlink or directory tree; missing is fine."""
    if path.is_symlink() or path.is_file():
        path.unlink(missing_ok=True)
    elif path.is_dir():
        shutil.rmtree(path, ignore_errors=False)


def read_bytes_or_none(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


def mkdirs(path: Path, mode: int = 0o755) -> list[Path]:
    """``mkdir -p`` that says what it made (outermost first), so a run that fails can remove
    exactly what it added; each new directory is synced into its parent."""
    missing: list[Path] = []
    here = path
    while not here.is_dir():
        missing.append(here)
        here = here.parent
    made: list[Path] = []
    for new in reversed(missing):
        try:
            new.mkdir(mode=mode)
        except FileExistsError:
            continue
        made.append(new)
        fsync_dir(new.parent)
    return made


def remove_if_empty(dirs: list[Path]) -> None:
    """Undo :func:`mkdirs`: remove each of ``dirs`` (innermost first) that is still empty."""
    for directory in reversed(dirs):
        try:
            directory.rmdir()
        except OSError:  # not empty (a kept partial download), or gone: keep going
            continue
        fsync_dir(directory.parent)


def exchange(a: Path, b: Path) -> bool:
    """Swap two directory entries in one atomic step; False where the kernel or filesystem
    cannot (the caller then does without)."""
    return _renameat2_exchange(a, b)
