"""The hal0 account's directories, made sound and checked through :mod:`safefs`.

``install`` makes its home and the dirs in it real directories with the right owner and mode
(an object of the wrong kind moved aside first, never followed); ``status`` and ``doctor``
list what is wrong with them, read-only.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Sequence
from typing import NamedTuple

from hal0_lemonade import safefs
from hal0_lemonade.layout import Layout


class DirSpec(NamedTuple):
    name: str  # "" for the home itself, else a directory directly in it
    mode: int


def ensure_dirs(layout: Layout, dirs: Sequence[DirSpec], owner: safefs.Owner) -> list[str]:
    """Make the home and the dirs in it real directories with ``owner`` and their modes.

    Returns what was done, one phrase per change; an object of the wrong kind is moved aside
    first (and named in the result), never followed.
    """
    done: list[str] = []
    anchor = safefs.open_root_dir(layout, safefs.HOME_PARENTS, create=True)
    with safefs.closing(anchor):
        home_spec = next((d for d in dirs if not d.name), DirSpec("", 0o750))
        home_parts = [*safefs.HOME_PARENTS, safefs.HOME]
        home = _ensure_one(layout, anchor, home_parts, spec=home_spec, owner=owner, done=done)
        with safefs.closing(home):
            for spec in dirs:
                if spec.name:
                    parts = [*safefs.HOME_PARENTS, safefs.HOME, spec.name]
                    fd = _ensure_one(layout, home, parts, spec=spec, owner=owner, done=done)
                    os.close(fd)
            if done:
                os.fsync(home)  # created or moved-aside names are durable
        if done:
            os.fsync(anchor)
    return done


def _ensure_one(
    layout: Layout,
    parent: int,
    parts: list[str],
    *,
    spec: DirSpec,
    owner: safefs.Owner,
    done: list[str],
) -> int:
    """The directory ``parts[-1]`` in ``parent``, made sound; its fd."""
    name = parts[-1]
    host = safefs.host_path(layout, parts)
    try:
        fd = safefs.open_child_dir(parent, name, host, owner)
    except FileNotFoundError:
        fd = -1
    except safefs.UnexpectedObjectError as bad:
        aside = safefs.quarantine(parent, name)
        done.append(f"moved {bad.what} at {host} aside to {aside} ({safefs.COMPROMISE})")
        fd = -1
    except safefs.UnsafePathError:
        # A stranger's directory in hal0's tree: re-owning it through its own fd cannot
        # reach anything outside it, and is what converging the tree means.
        fd = os.open(name, safefs.DIR_FLAGS, dir_fd=parent)
    created = fd == -1
    if created:
        os.mkdir(name, 0o700, dir_fd=parent)  # its final mode once it is owned right
        fd = os.open(name, safefs.DIR_FLAGS, dir_fd=parent)
        done.append(f"created {host}")
    try:
        st = os.fstat(fd)
        if owner.uid != -1 and (st.st_uid, st.st_gid) != (owner.uid, owner.gid):
            os.fchown(fd, owner.uid, owner.gid)
            if not created:
                done.append(f"owned {host} by {safefs.HOME}")
        if stat.S_IMODE(st.st_mode) != spec.mode:
            os.fchmod(fd, spec.mode)
            if not created:
                done.append(f"set {host} to mode {spec.mode:o}")
    except BaseException:
        os.close(fd)
        raise
    return fd


MISSING = "missing"


def dir_problem(layout: Layout, spec: DirSpec, owner: safefs.Owner) -> str:
    """Read-only: "" when ``spec`` holds, :data:`MISSING`, or what is wrong with it."""
    parts = [safefs.HOME, spec.name] if spec.name else [safefs.HOME]
    host = safefs.host_path(layout, [*safefs.HOME_PARENTS, *parts])
    try:
        with safefs.open_dir(layout, parts[1:], owner) as fd:
            st = os.fstat(fd)
    except FileNotFoundError:
        return MISSING
    except safefs.UnsafePathError as exc:
        return exc.message
    if owner.uid not in (-1, st.st_uid):
        return f"{host} is owned by uid {st.st_uid}, not {safefs.HOME}"
    if stat.S_IMODE(st.st_mode) != spec.mode:
        return f"{host} has mode {stat.S_IMODE(st.st_mode):o}, not {spec.mode:o}"
    return ""


def inspect(
    layout: Layout,
    dirs: Sequence[DirSpec],
    files: Sequence[tuple[str, str]],
    owner: safefs.Owner,
    *,
    cap: int,
) -> list[str]:
    """Read-only: every object of the wrong kind, owner or mode in the hal0 tree, one line
    each.  Missing objects are not problems here (the checks that need them say so);
    ``files`` are (dir name, file name) pairs checked where they exist."""
    problems = [dir_problem(layout, spec, owner) for spec in dirs]
    for dirname, name in files:
        found = safefs.read_file(layout, [dirname], name, owner, cap=cap)
        if found.unsafe:
            problems.append(found.problem)
    return _dedupe([p for p in problems if p and p != MISSING])


def _dedupe(problems: list[str]) -> list[str]:
    """One line per unsound object: a bad home shows up again under every dir in it."""
    return list(dict.fromkeys(problems))
