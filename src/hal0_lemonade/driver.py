"""The one way every command runs: environment, root check, lock, dry run, apply, output, exit.

A command is a function from a :class:`Context` to what it found or would do: a
:class:`checks.Report` (status, doctor) or a :class:`render.Listing` (config show); a command
that changes the host (install, rollback, uninstall) returns a function that makes its
:class:`plan.Plan`, having checked its request first (so a refused request takes no lock and
leaves nothing behind).  :func:`execute` does the rest the same way for all of them:

* reads and checks the ``HAL0_*`` environment first (:mod:`hal0_lemonade.environment`), so a
  malformed value is a usage error before anything is looked at;
* a plan that changes ``/`` needs root, takes the install lock (built under the lock, so it
  describes the host as it is when it runs), and with ``--dry-run`` is printed, not applied;
* prints through one renderer (:mod:`hal0_lemonade.render`), human or ``--json``;
* maps the outcome to the exit code: 0 success, 1 failure (a failed step, a failed check),
  2 usage error; tracebacks only with ``--debug``.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import stat
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NamedTuple

from hal0_lemonade import plan, progress, render, safefs
from hal0_lemonade.checks import Report
from hal0_lemonade.environment import Environment
from hal0_lemonade.errors import Hal0Error, LockError, UsageError
from hal0_lemonade.hostfacts import Host
from hal0_lemonade.layout import Layout
from hal0_lemonade.oserrors import explain
from hal0_lemonade.runner import SubprocessRunner

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2
# Every step before the plan's soft step held; that one failed (install: the files are in
# place, the service is not active and healthy on the requested release).
EXIT_SOFT = 3


class Options(NamedTuple):
    """The flags every command shares (a command without one leaves its default)."""

    root: Path = Path("/")
    as_json: bool = False
    debug: bool = False
    dry_run: bool = False
    quiet: bool = False
    step_offset: int = 0
    step_total: int | None = None


class Context(NamedTuple):
    """What a command works with: the host, the environment, and how it reports progress."""

    host: Host
    options: Options
    progress: progress.Progress | None = None  # the download bar (install only)

    @property
    def layout(self) -> Layout:
        return self.host.layout

    @property
    def env(self) -> Environment:
        return self.host.env


Outcome = Report | render.Listing
Planner = Callable[[], plan.Plan]  # makes the plan: run under the lock when it is applied
Command = Callable[[Context], Outcome | Planner]


def execute(command: Command, options: Options, *, changes: bool) -> int:
    """Run ``command``; ``changes``: it returns a plan that changes the host."""
    human = not options.as_json
    bar = progress.for_stream(sys.stderr, "Lemonade", quiet=options.quiet or not human)
    numbering = render.Numbering(options.step_offset, options.step_total)
    out: render.Renderer = (
        render.Human(numbering=numbering, progress=bar) if human else (render.Json())
    )
    try:
        env = Environment.read()
        layout = Layout(options.root)
        host = Host(layout, SubprocessRunner(), env)
        context = Context(host, options, bar)
        if changes and not options.dry_run:
            _need_root(layout)
        outcome = command(context)
        if not changes:
            return _show(outcome, out)
        if not callable(outcome):  # pragma: no cover - a wiring mistake, not input
            raise TypeError(f"a changing command returned {type(outcome).__name__}")
        if options.dry_run:
            out.plan(_plan(outcome(), options))
            return EXIT_OK
        with _umask_022(), install_lock(layout, env.lock_wait):
            return _apply(_plan(outcome(), options), out)
    except Hal0Error as exc:
        out.error(exc, debug=options.debug)
        return exc.exit_code
    except KeyboardInterrupt:
        sys.stderr.write("interrupted: the previous state is still live; re-run to converge\n")
        return EXIT_FAIL


def _need_root(layout: Layout) -> None:
    if layout.is_host_root and os.geteuid() != 0:
        raise Hal0Error(
            "changing / needs root privileges",
            hint="run it with sudo, or use --dry-run to see the plan, or --root DIR",
        )


def _plan(outcome: plan.Plan, options: Options) -> plan.Plan:
    count = len(outcome.steps)
    if options.step_total is not None and options.step_total < options.step_offset + count:
        raise UsageError(
            f"--step-total {options.step_total} is less than --step-offset "
            f"{options.step_offset} plus this {outcome.command}'s {count} steps",
            hint=f"give --step-total {options.step_offset + count} or more",
        )
    return outcome


def _apply(planned: plan.Plan, out: render.Renderer) -> int:
    result = plan.apply(planned.steps, planned.version, out)
    out.result(planned, result)
    if result.ok:
        return EXIT_OK
    soft = planned.soft_step is not None and result.steps[-1].name == planned.soft_step
    return EXIT_SOFT if soft else EXIT_FAIL


def _show(outcome: Outcome | Planner, out: render.Renderer) -> int:
    if isinstance(outcome, Report):
        out.report(outcome)
        return EXIT_OK if outcome.ok else EXIT_FAIL
    if not isinstance(outcome, render.Listing):  # pragma: no cover - a wiring mistake
        raise TypeError(f"a reading command returned {type(outcome).__name__}")
    out.listing(outcome)
    return EXIT_OK


@contextlib.contextmanager
def _umask_022() -> Iterator[None]:
    """Every path is created with an explicit mode; a restrictive umask (077 in a hardened
    root shell) must not leave /opt/lemonade.releases or its dirs untraversable by hal0."""
    umask = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(umask)


# -- the install lock -------------------------------------------------------------------------


def _open_lock(layout: Layout) -> int:
    """The lock file, in a directory only root can write, opened without following a link."""
    name = layout.lock.host.name
    flags = os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
    try:
        run = safefs.open_root_dir(layout, layout.lock.host.parent.parts[1:], create=True)
    except OSError as exc:
        raise explain(exc, step="Install lock") from exc
    try:
        try:
            fd = os.open(name, os.O_RDWR | os.O_CREAT | flags, 0o600, dir_fd=run)
        except OSError as exc:
            # A read-only target: flock works on a read-only descriptor of an existing file,
            # and the steps then fail with a clear error at their first write.
            try:
                fd = os.open(name, os.O_RDONLY | flags, dir_fd=run)
            except OSError:
                raise explain(exc, step="Install lock") from exc
    finally:
        os.close(run)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise LockError(f"{layout.lock} is not a regular file", hint=f"remove {layout.lock}")
    return fd


@contextlib.contextmanager
def install_lock(layout: Layout, wait: float) -> Iterator[None]:
    """One changing command at a time per root: a second waits ``wait`` seconds, then refuses."""
    fd = _open_lock(layout)
    try:
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise LockError(
                        f"another hal0-lemonade run holds {layout.lock} (waited {wait:g} s)",
                        hint="wait for it to finish (the lock is released when it exits), or "
                        "set HAL0_LEMONADE_LOCK_WAIT to wait longer",
                    ) from None
                time.sleep(0.1)
        yield
    finally:
        os.close(fd)
