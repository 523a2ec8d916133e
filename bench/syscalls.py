"""Count what a command asks the kernel to change: ``strace -f -y`` of its whole process tree.

Every call that writes data (write family), changes metadata (mkdir, rename, unlink, chmod,
chown, utimensat, truncate, link, xattrs, ...), opens a file for writing or creating, or
syncs, is listed with its path (``-y`` resolves descriptors).  Writes to stdout and stderr,
pipes, sockets and ``/dev`` are output, counted apart.  A call that failed changed nothing
and is not listed.  Used on a no-op re-run, where every list but the output should be empty
(the lock file is opened for writing, ``O_CREAT``, and left as it is).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

from bench.results import Syscalls

WRITES = {"write", "pwrite64", "writev", "pwritev", "pwritev2"}
CHANGES = {
    "mkdir", "mkdirat", "rmdir", "unlink", "unlinkat", "rename", "renameat", "renameat2",
    "link", "linkat", "symlink", "symlinkat", "chmod", "fchmod", "fchmodat", "chown",
    "fchown", "lchown", "fchownat", "utime", "utimes", "utimensat", "futimesat", "truncate",
    "ftruncate", "fallocate", "setxattr", "lsetxattr", "fsetxattr", "removexattr",
    "lremovexattr", "fremovexattr", "mknod", "mknodat",
}  # fmt: skip
OPENS = {"open", "openat", "openat2", "creat"}
SYNCS = {"fsync", "fdatasync", "syncfs", "sync", "sync_file_range"}
TRACED = sorted({"execve"} | WRITES | CHANGES | OPENS | SYNCS)
WRITE_FLAGS = ("O_WRONLY", "O_RDWR", "O_CREAT", "O_TRUNC")
NOT_FILES = ("pipe:", "socket:", "anon_inode:", "/dev/")

_CALL = re.compile(r"^(\d+)\s+(\w+)\((.*)$")
_RESUMED = re.compile(r"^(\d+)\s+<\.\.\. (\w+) resumed>(.*)$")
_RESULT = re.compile(r"\)\s+=\s+(-?\d+|\?)")
_FD = re.compile(r"^(\d+)<([^>]*)>")


def unavailable() -> str:
    return "" if shutil.which("strace") else "strace is not installed"


def _calls(lines: Sequence[str]) -> list[tuple[int, str, str]]:
    """(pid, syscall, whole call text with its result), unfinished calls joined up."""
    pending: dict[tuple[int, str], str] = {}
    calls: list[tuple[int, str, str]] = []
    for line in lines:
        resumed = _RESUMED.match(line)
        if resumed:
            key = (int(resumed.group(1)), resumed.group(2))
            head = pending.pop(key, "")
            calls.append((key[0], key[1], head + resumed.group(3)))
            continue
        call = _CALL.match(line)
        if not call:
            continue  # signals, exits
        pid, name, rest = int(call.group(1)), call.group(2), call.group(3)
        if rest.endswith("<unfinished ...>"):
            pending[(pid, name)] = rest.removesuffix("<unfinished ...>")
        else:
            calls.append((pid, name, rest))
    return calls


def classify(lines: Sequence[str]) -> Syscalls:
    out = Syscalls()
    pids: set[int] = set()
    for pid, name, text in _calls(lines):
        pids.add(pid)
        result = _RESULT.search(text)
        if result is None or result.group(1) in ("-1", "?"):
            continue  # failed (or never returned): nothing changed
        call = f"{name}({text.split(')', 1)[0][:160]})"
        if name in WRITES:
            fd = _FD.match(text)
            target = fd.group(2) if fd else ""
            if fd is None or fd.group(1) in ("1", "2") or target.startswith(NOT_FILES):
                out.output_writes += 1
            else:
                out.file_writes.append(call)
        elif name in CHANGES:
            out.changes.append(call)
        elif name in OPENS and any(flag in text for flag in WRITE_FLAGS):
            if '"/dev/' not in text:
                out.write_opens.append(call)
        elif name in SYNCS:
            out.syncs.append(call)
    out.processes = len(pids)
    return out


def trace(argv: Sequence[str | Path], *, cwd: Path | None = None) -> tuple[int, Syscalls]:
    """Run ``argv`` under ``strace -f -y``; its exit code and what it changed."""
    with tempfile.NamedTemporaryFile("r", suffix=".strace") as log:
        done = subprocess.run(
            [
                "strace", "-f", "-qq", "-y", "-s", "64", "-o", log.name,
                "-e", "trace=" + ",".join(f"?{name}" for name in TRACED),
                *map(str, argv),
            ],
            cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False,
        )  # fmt: skip
        return done.returncode, classify(Path(log.name).read_text().splitlines())
