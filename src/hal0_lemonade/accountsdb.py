"""The accounts database after a kill or a power cut: roll an interrupted shadow-utils command
back, and make what a finished one wrote durable.

How shadow-utils 4.13 (``lib/commonio.c``) changes ``/etc/{passwd,shadow,group,gshadow}``:

1. lock every file it may change: write its pid to ``X.<pid>``, ``fdatasync``, ``link`` that
   to ``X.lock`` (a lock whose pid is dead is taken over), unlink ``X.<pid>``;
2. for each changed file in turn: copy ``X`` to ``X-`` and ``fsync`` (the backup), write the
   new content to ``X+`` and ``fsync``, ``rename`` ``X+`` over ``X``;
3. unlink the locks.

It never syncs ``/etc`` itself.  So a power cut after ``useradd`` returned can undo the last
renames and every unlink (seen: ``gshadow`` without the new group, the line only in
``gshadow+``, four ``*.lock``), and a kill inside it (OOM, a timeout) stops anywhere in
between.  Both leave a stale ``X.lock`` on every file the command was changing, because the
locks are taken before the first change and dropped after the last.

The repair rolls that command back, which restores a database the command found consistent:

* ``X`` was replaced by the interrupted command iff its inode changed after ``X.lock`` was
  written (``ctime >= `` the lock's ``mtime``), and then ``X-`` holds what it replaced: the
  backup was written and synced after the lock and before ``X+`` existed (its ctime is after
  the lock too, which rules out an older backup).  Such an ``X`` gets the bytes of ``X-`` back.
* Unless the command was already unlocking: a file changed after the locks were taken that
  has no lock any more was unlocked, and a command unlocks only once every change is made.  Then
  nothing is rolled back (the stale locks just go): the command is finished.
* Then the leftovers go: ``X+``, ``X.<pid>``, newer shadow-utils' ``X.cioXXXXXX`` temp names,
  our own temp names, and last the stale locks.  A repair cut short is therefore done again:
  in its restores, the same evidence decides the same; in its unlocks, the rule above sees a
  finished repair, which it is (every restore came before the first unlock).
* A user in ``passwd`` without a ``shadow`` line (a group without a ``gshadow`` line) that no
  lock explains is given one by ``pwconv`` (``grpconv``), the tools made for that.

A lock is left alone, and the repair refused, while its pid belongs to a live process that
started before the lock was written (a pid reused after a reboot is not the holder).  On the
host root the repair also holds glibc's ``lckpwdf`` lock (``/etc/.pwd.lock``), which every
host shadow-utils command takes first.

Times are compared in nanoseconds (ext4 with 256-byte inodes, xfs, btrfs).  Where a
filesystem keeps whole seconds, a change in the lock's own second counts as after it: a file
another command changed in that second would be taken for this command's.

The installer then runs its own ``useradd`` again from the restored database, so the result is
exactly that of an uninterrupted install.  The check for all this, on every run, is one listing
of ``/etc`` and reading the four files.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import stat
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from hal0_lemonade import fsops
from hal0_lemonade.errors import LockError
from hal0_lemonade.runner import CommandRunner

DBS = ("passwd", "shadow", "group", "gshadow")
# Each shadow file must hold a line for every name of its primary file.
PAIRS = (("passwd", "shadow"), ("group", "gshadow"))
FIELDS = {"passwd": 7, "shadow": 9, "group": 4, "gshadow": 4}
FIXERS = {"shadow": "pwconv", "gshadow": "grpconv"}
LCKPWDF_FILE = ".pwd.lock"
LCKPWDF_WAIT_S = 15.0  # what glibc's lckpwdf waits
PID_MAX = 1 << 22  # the kernel's limit for pid_max


@dataclass(frozen=True)
class Damage:
    """What the repair will do; ``after`` is passwd and group as it leaves them."""

    busy: str = ""  # non-empty: a running process holds a lock, nothing may be touched
    restore: tuple[str, ...] = ()  # files rolled back to their ``-`` backup
    litter: tuple[str, ...] = ()  # names in /etc to remove (stale locks last)
    unmatched: dict[str, tuple[str, ...]] = field(default_factory=dict)  # shadow -> names
    after: dict[str, str] = field(default_factory=dict)

    def summary(self) -> str:
        if self.busy:
            return self.busy
        parts = []
        if self.restore:
            parts.append("roll back " + ", ".join(f"/etc/{db}" for db in self.restore))
        if self.litter:
            parts.append("remove " + ", ".join(f"/etc/{name}" for name in self.litter))
        for shadow, names in self.unmatched.items():
            parts.append(f"{FIXERS[shadow]} for {', '.join(names)} (no /etc/{shadow} line)")
        return "; ".join(parts)


def names(text: str) -> list[str]:
    """Entry names, without NIS ``+``/``-`` lines (shadow-utils keeps those apart too)."""
    found = []
    for line in text.splitlines():
        name = line.split(":", 1)[0]
        if name and name[0] not in "+-#":
            found.append(name)
    return found


def sound(db: str, text: str) -> bool:
    """Every line whole: the file's number of fields, and a newline at the end."""
    if text and not text.endswith("\n"):
        return False
    return all(line.count(":") == FIELDS[db] - 1 for line in text.splitlines() if line)


def leftover(name: str) -> tuple[str, str] | None:
    """``(db, kind)`` when ``name`` is what an interrupted write leaves of a database file:
    kind ``+``, ``lock``, a pid (``X.<pid>``), ``cio`` (``X.cioXXXXXX``) or ``tmp`` (our
    ``.X.tmp-<8 hex>``).  String tests, not a regex: this runs on every install."""
    if name.startswith("."):
        db, _, rest = name[1:].partition(".tmp-")
        hexdigits = len(rest) == 8 and all(c in "0123456789abcdef" for c in rest)
        return (db, "tmp") if db in DBS and hexdigits else None
    for db in DBS:
        rest = name.removeprefix(db)
        if rest == name:
            continue
        if rest in ("+", ".lock"):
            return db, rest.lstrip(".")
        if rest[:1] == "." and rest[1:].isascii() and rest[1:].isdigit():
            return db, rest[1:]
        if rest.startswith(".cio") and len(rest) == 10:
            return db, "cio"
    return None


def _read(path: Path) -> str | None:
    """The text, or None when missing (or unreadable: a dry run as a user cannot judge it)."""
    try:
        return path.read_bytes().decode("utf-8", "surrogateescape")
    except (FileNotFoundError, PermissionError):
        return None


def _ctime(path: Path) -> int | None:
    try:
        return path.lstat().st_ctime_ns
    except FileNotFoundError:
        return None


def diagnose(etc: Path) -> Damage | None:
    """Read-only: None when the database is sound (one listing of /etc, four small reads)."""
    try:
        listing = os.listdir(etc)  # noqa: PTH208 - names only: no Path object per entry
    except FileNotFoundError:
        return None
    leftovers = sorted(n for n in listing if leftover(n))
    texts = {db: _read(etc / db) for db in DBS}
    if not leftovers and not _unmatched(texts):
        return None

    busy = ""
    locks: dict[str, int] = {}  # db -> mtime of its stale lock
    for name in leftovers:
        db, kind = leftover(name) or ("", "")
        path = etc / name
        try:
            st = path.lstat()
        except FileNotFoundError:
            continue
        if kind == "lock":
            pid = _lock_pid(path)
        elif kind.isdigit():
            pid = int(kind)  # a lock being taken (or a dead taker's temp name)
        else:
            continue
        if pid is not None and holds(pid, st.st_mtime_ns):
            busy = busy or (
                f"{etc / name} belongs to process {pid}, a shadow-utils command still running"
            )
        elif kind == "lock":
            locks[db] = st.st_mtime_ns

    restore = []
    after = dict(texts)
    # A file changed since the locks were taken but no longer locked was unlocked by the
    # command, which unlocks only once every change is made: it was cut short in its unlocks,
    # and it is finished (the stale locks just go), not rolled back.
    first = min(locks.values(), default=0)
    unlocked = any((_ctime(etc / db) or -1) >= first for db in DBS if db not in locks)
    for db, locked_at in ({} if unlocked else locks).items():
        changed, backup = _ctime(etc / db), _ctime(etc / f"{db}-")
        if changed is None or backup is None or min(changed, backup) < locked_at:
            continue  # the command had not replaced this file (or has no backup of its own)
        old = _read(etc / f"{db}-")
        if old is not None and sound(db, old) and old != texts[db]:
            restore.append(db)
            after[db] = old
    # The locks are the evidence the rollback is decided by: they go last.
    litter = sorted(leftovers, key=lambda n: (n.endswith(".lock"), n))
    unmatched = {} if busy else _unmatched(after)
    return Damage(
        busy=busy,
        restore=() if busy else tuple(restore),
        litter=() if busy else tuple(litter),
        unmatched=unmatched,
        after={db: after[db] or "" for db in ("passwd", "group")},
    )


def _unmatched(texts: dict[str, str | None]) -> dict[str, tuple[str, ...]]:
    """shadow file -> names of its primary file it has no line for (where it exists)."""
    found = {}
    for primary, shadow in PAIRS:
        text, shadow_text = texts[primary], texts[shadow]
        if text is None or shadow_text is None:
            continue
        present = set(names(shadow_text))
        missing = [n for n in names(text) if n not in present]
        if missing:
            found[shadow] = tuple(missing)
    return found


def _lock_pid(path: Path) -> int | None:
    """The pid in a shadow-utils lock ("1234\\0"); None when there is none.

    A holder writes and syncs its pid before it links the lock into place, so a lock without
    one was never a live process's: it is as stale as a dead pid's (and shadow-utils itself
    would refuse it for ever).
    """
    try:
        # Only its head, and never through a link or into a FIFO: a lock is a small file.
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            head = os.read(fd, 32)
        finally:
            os.close(fd)
    except OSError:
        return None
    raw = head.split(b"\0", 1)[0].strip()
    return int(raw) if raw.isdigit() else None


def holds(pid: int, since_ns: int) -> bool:
    """Is ``pid`` a live process that already ran at ``since_ns`` (when its lock was written)?

    After a reboot, a lock's pid often names some new process: one that started later is not
    the holder.  /proc/stat's ``btime`` has one-second resolution, hence the slack.
    """
    if not 0 < pid <= PID_MAX:
        return False  # no process's (kill(0, 0) would even signal our own process group)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # alive, someone else's
    started = _start_ns(pid)
    return started is None or started <= since_ns + 1_000_000_000


def _start_ns(pid: int) -> int | None:
    try:
        proc = Path(f"/proc/{pid}/stat").read_text()
        boot = next(
            int(line.split()[1])
            for line in Path("/proc/stat").read_text().splitlines()
            if line.startswith("btime ")
        )
    except (OSError, StopIteration, ValueError):
        return None
    # Fields after the ")" that ends the command name: state is field 3, starttime field 22.
    ticks = int(proc.rsplit(")", 1)[1].split()[19])
    return boot * 1_000_000_000 + ticks * 1_000_000_000 // os.sysconf("SC_CLK_TCK")


def repair(etc: Path, runner: CommandRunner, *, host: bool, root: Path) -> str:
    """Roll back what an interrupted command left, then give unmatched names their lines.

    Decided afresh under the lock: what is true now, not what the plan saw.
    """
    with pwd_lock(etc, take=host):
        damage = diagnose(etc)
        if damage is None:
            return "accounts database sound"
        if damage.busy:
            raise LockError(
                damage.busy, hint="wait for that command to finish, then re-run the install"
            )
        for db in damage.restore:
            st = (etc / db).lstat()
            fsops.atomic_write(
                etc / db,
                (etc / f"{db}-").read_bytes(),
                mode=stat.S_IMODE(st.st_mode),
                uid=st.st_uid,
                gid=st.st_gid,
            )
        for name in damage.litter:
            (etc / name).unlink(missing_ok=True)
        fsops.fsync_dir(etc)
    for shadow in damage.unmatched:
        runner.run([FIXERS[shadow], *([] if host else ["--root", str(root)])])
    if damage.unmatched:
        sync(etc)
    return f"repaired the accounts database: {damage.summary()}"


def sync(etc: Path) -> None:
    """Make what a shadow-utils command wrote durable.  It syncs each new file before renaming
    it into place, but not /etc: the renames and the lock removals are only in the directory.
    """
    for db in DBS:
        with contextlib.suppress(FileNotFoundError):
            fsops.fsync_file(etc / db)
    fsops.fsync_dir(etc)


@contextlib.contextmanager
def pwd_lock(etc: Path, *, take: bool, wait: float = LCKPWDF_WAIT_S) -> Iterator[None]:
    """glibc's ``lckpwdf``: a write lock on ``/etc/.pwd.lock``, which shadow-utils takes before
    its own locks on the host (not with ``--prefix``, so a sandbox root gets no such file)."""
    if not take:
        yield
        return
    fd = os.open(etc / LCKPWDF_FILE, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError:
                if time.monotonic() >= deadline:
                    raise LockError(
                        f"{etc / LCKPWDF_FILE} is held by another process (waited {wait:g} s)",
                        hint="a command is changing the accounts database; re-run when done",
                    ) from None
                time.sleep(0.1)
        yield
    finally:
        os.close(fd)
