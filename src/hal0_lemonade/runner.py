"""The one seam through which the installer runs host commands (useradd, systemctl, ...).

Every command runs detached from the operator's terminal: ``/dev/null`` on stdin, a new
session (so no controlling terminal: nothing it does can reach root's tty, e.g. with
``TIOCSTI``), no inherited descriptors, a fixed environment, and output read up to a cap
within a deadline.  That matters most for the one command that runs as the ``hal0`` account
(doctor's GPU self-test): a compromised daemon can ptrace any process of its own uid, so such
a process must hold nothing of root's.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from typing import NamedTuple, Protocol

from hal0_lemonade.errors import CommandError

ENV = {"LC_ALL": "C", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "SYSTEMD_PAGER": ""}
MAX_OUTPUT = 1 << 20  # per stream: what systemctl and useradd print is a few kB
_GRACE_S = 0.5  # how long output is still read once the command itself has exited


class Identity(NamedTuple):
    """Run as this account instead of root (uid, primary gid, supplementary gids)."""

    uid: int
    gid: int
    groups: tuple[int, ...] = ()


class CommandResult(NamedTuple):
    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str


class CommandRunner(Protocol):
    def run(
        self,
        argv: Sequence[str],
        *,
        check: bool = True,
        timeout: float = 60.0,
        run_as: Identity | None = None,
        env: Mapping[str, str] | None = None,
    ) -> CommandResult: ...


class SubprocessRunner:
    """Runs commands for real, with a C locale so their output parses the same everywhere."""

    def run(
        self,
        argv: Sequence[str],
        *,
        check: bool = True,
        timeout: float = 60.0,
        run_as: Identity | None = None,
        env: Mapping[str, str] | None = None,
    ) -> CommandResult:
        """``env`` adds to the fixed environment (never replaces PATH or the locale)."""
        args = tuple(argv)
        try:
            process = subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                close_fds=True,
                start_new_session=True,  # setsid(): no controlling terminal
                env={**(env or {}), **ENV},
                # With run_as, the stdlib drops to the account in the child between fork and
                # exec, groups first: setgroups, setregid, setreuid (no setpriv needed).
                user=run_as.uid if run_as else None,
                group=run_as.gid if run_as else None,
                extra_groups=list(run_as.groups) if run_as else None,
            )
        except FileNotFoundError as exc:
            raise CommandError(
                f"{args[0]} is not installed", hint=f"install the package that provides {args[0]}"
            ) from exc
        out, err, finished = _collect(process, timeout)
        if not finished:
            raise CommandError(f"`{' '.join(args)}` did not finish within {timeout:g} s")
        result = CommandResult(args, process.returncode, out, err)
        if check and process.returncode != 0:
            tail = (err or out).strip().splitlines()[-1:] or ["no output"]
            raise CommandError(f"`{' '.join(args)}` failed ({process.returncode}): {tail[0]}")
        return result


def _collect(process: subprocess.Popen[bytes], timeout: float) -> tuple[str, str, bool]:
    """stdout and stderr, each cut at :data:`MAX_OUTPUT`, and whether the process ended in
    time.  A process that overruns the deadline is killed with its whole session; one that
    prints past the cap is only cut off (what it printed first is kept)."""
    assert process.stdout is not None and process.stderr is not None  # noqa: S101 - PIPE above
    deadline = time.monotonic() + timeout
    streams = (process.stdout, process.stderr)
    buffers = {stream.fileno(): bytearray() for stream in streams}
    with selectors.DefaultSelector() as selector:
        for fd in buffers:
            os.set_blocking(fd, False)
            selector.register(fd, selectors.EVENT_READ)
        while selector.get_map():
            now = time.monotonic()
            if process.poll() is not None:
                # Exited: a child it left behind may hold the pipes open for ever.
                deadline = min(deadline, now + _GRACE_S)
            left = deadline - now
            if left <= 0:
                break
            for key, _ in selector.select(min(left, _GRACE_S)):
                chunk = os.read(key.fd, 65536)
                buffer = buffers[key.fd]
                if not chunk:
                    selector.unregister(key.fd)
                    continue
                buffer += chunk[: max(0, MAX_OUTPUT - len(buffer))]
    try:
        process.wait(max(0.0, deadline - time.monotonic()))
        finished = True
    except subprocess.TimeoutExpired:
        finished = False
        _kill_session(process)
    for stream in streams:
        stream.close()
    out, err = (bytes(b).decode("utf-8", "replace") for b in buffers.values())
    return out, err, finished


def _kill_session(process: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()
