"""Checks on a staged release before it may go live: will it run on this host, as hal0 wants it?

Run on the staging tree, after the digest matched and before the rename that promotes it, so
a release that cannot work here is refused with nothing changed:

* its ``resources/defaults.json`` declares a config schema hal0 can render, holding every key
  hal0 locks (a release that renamed one would run with the lock silently gone);
* every shared library its ``lemond`` links resolves (11.x links libdrm, which a minimal
  Debian lacks: the daemon would exit at start, after the old release was gone);
* its ``lemond --version`` says the version being installed.

``lemond --version`` is the one time root executes release code: the tree is the one whose
digest matched the pin or ``--sha256``, and the runner gives it no terminal, no descriptors of
root's and a deadline (see docs/security.md).
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable
from pathlib import Path

from hal0_lemonade import configschema
from hal0_lemonade.errors import ArchiveError, CommandError, Hal0Error
from hal0_lemonade.runner import CommandRunner

DEFAULTS = "resources/defaults.json"
# The shared libraries Lemonade releases link that a minimal Debian may lack, by package.
PACKAGES = {
    "libdrm.so.2": "libdrm2",
    "libdrm_amdgpu.so.1": "libdrm-amdgpu1",
    "libssl.so.3": "libssl3",
    "libcrypto.so.3": "libssl3",
    "libz.so.1": "zlib1g",
    "libbrotlidec.so.1": "libbrotli1",
    "libbrotlicommon.so.1": "libbrotli1",
    "libidn2.so.0": "libidn2-0",
    "libstdc++.so.6": "libstdc++6",
    "libgcc_s.so.1": "libgcc-s1",
}
_NOT_FOUND = re.compile(r"^\s*(\S+) => not found\s*$", re.MULTILINE)


class PreflightError(Hal0Error):
    """The release would not run on this host as hal0 needs it; it was not installed."""


def schema(tree: Path, version: str) -> int:
    """The config schema ``tree``'s defaults.json declares, checked to hold hal0's keys."""
    try:
        raw = (tree / DEFAULTS).read_bytes()
        defaults = json.loads(raw)
    except (OSError, ValueError, RecursionError) as exc:
        raise ArchiveError(f"Lemonade {version}: {DEFAULTS} cannot be read ({exc})") from exc
    if not isinstance(defaults, dict) or (found := configschema.schema_of(defaults)) is None:
        declared = defaults.get("config_version") if isinstance(defaults, dict) else None
        raise PreflightError(
            f"Lemonade {version} declares config_version {declared!r} in {DEFAULTS}; this "
            f"installer renders versions {', '.join(map(str, configschema.SCHEMAS))}",
            hint="install a release this hal0-lemonade supports, or upgrade hal0-lemonade",
        )
    missing = configschema.missing_keys(defaults, found)
    if missing:
        raise PreflightError(
            f"Lemonade {version}'s {DEFAULTS} has no {', '.join(missing)}: hal0 could not "
            "lock them, so it refuses to run it",
            hint="install a release this hal0-lemonade supports, or upgrade hal0-lemonade",
        )
    return found


def libraries(tree: Path, version: str, runner: CommandRunner) -> None:
    """Refuse when the dynamic loader cannot find a library ``lemond`` links."""
    try:
        done = runner.run(["ldd", str(tree / "lemond")], check=False, timeout=30)
    except CommandError:  # no ldd (not glibc): the --version check below still runs it
        return
    missing = _NOT_FOUND.findall(done.stdout)
    if missing:
        packages = sorted({PACKAGES.get(lib, "") for lib in missing} - {""})
        named = ", ".join(
            f"{lib} (Debian: {PACKAGES[lib]})" if lib in PACKAGES else lib for lib in missing
        )
        how = f"apt-get install {' '.join(packages)}" if packages else "install them"
        raise PreflightError(
            f"lemond {version} needs {named}, which this host lacks; nothing was changed",
            hint=f"{how}, then re-run the install",
        )


def reports_version(tree: Path, version: str, runner: CommandRunner) -> None:
    """``lemond --version`` must run and name ``version``."""
    # 11.x refuses to start, even for --version, without a HOME; it is not read or written.
    home = {"HOME": "/nonexistent"}
    done = runner.run([str(tree / "lemond"), "--version"], check=False, timeout=30, env=home)
    said = (done.stdout.strip().splitlines() or [""])[0]
    if done.returncode != 0 or said != f"lemond version {version}":
        why = said or (done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[-1]
        raise PreflightError(
            f"the archive's lemond does not run as Lemonade {version} here: {why!r}",
            hint="check --version against the archive; nothing was changed",
        )


def tree_schema(tree: Path) -> int:
    """The config schema of a release tree already on disk (checked when it was staged); 1
    when its defaults.json is unreadable (a seed-era tree: those are 10.x)."""
    try:
        defaults = json.loads((tree / DEFAULTS).read_bytes())
    except (OSError, ValueError, RecursionError):
        return 1
    found = configschema.schema_of(defaults) if isinstance(defaults, dict) else None
    return found or 1


def check(
    tree: Path, version: str, runner: CommandRunner, *, beside: Callable[[], None] | None = None
) -> int:
    """Every check above on a staged tree; its config schema.

    ``lemond --version`` runs first: when it runs, the loader found every library lemond
    links, and ``ldd`` (a shell script, ~8 ms) is only asked when it did not, to name what is
    missing and which package has it.  ``beside`` (the staging tree's final flush) runs at the
    same time: neither reads what the other writes.  Both have finished when this returns or
    raises.
    """
    found = schema(tree, version)

    def runs() -> None:
        try:
            reports_version(tree, version, runner)
        except PreflightError:
            libraries(tree, version, runner)  # names the missing libraries, if that is why
            raise

    together(runs, *([beside] if beside is not None else []))
    return found


def together(*jobs: Callable[[], None]) -> None:
    """Run ``jobs`` at once (the first in this thread); raise the first one's error, in order."""
    errors: list[BaseException | None] = [None] * len(jobs)

    def run(index: int) -> None:
        try:
            jobs[index]()
        except BaseException as exc:  # handed to the caller below
            errors[index] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(1, len(jobs))]
    for thread in threads:
        thread.start()
    run(0)
    for thread in threads:
        thread.join()
    for error in errors:
        if error is not None:
            raise error
