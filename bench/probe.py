"""Child process: one install with the phases timed (or profiled), result as JSON on stdout.

``python -m bench.probe ROOT URL SHA256 VERSION [--profile OUT.pstats]``.  Runs the real
``installer.Installer`` (the code ``hal0-lemonade install`` uses for the release step) and
reports the phases it times itself (``Installer.timings``).  ``--cli ARGS...`` (or
``--noop``, the same) instead runs (and profiles) a whole CLI run, ``cli.main(ARGS)``,
after the imports; ``--whatif VARIANT ROOT
URL SHA256 VERSION`` times the same release step with one piece switched off from outside
src/ (see ``whatif``), to show what that piece costs or buys.
"""

from __future__ import annotations

import time

T_START = time.monotonic()

import cProfile  # noqa: E402 - the import time of what follows is part of the measurement
import json  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
import zlib  # noqa: E402
from pathlib import Path  # noqa: E402
from types import SimpleNamespace  # noqa: E402
from typing import Any  # noqa: E402

from hal0_lemonade import archive, archive_stream, cli, fsops, releases  # noqa: E402
from hal0_lemonade.layout import Layout  # noqa: E402
from hal0_lemonade.resources import installer  # noqa: E402

T_IMPORTED = time.monotonic()
TIMES: dict[str, float] = {}


def install(root: Path, url: str, sha: str, version: str) -> dict[str, Any]:
    pin = releases.resolve(version, url, sha, skip_sha=False)
    started = time.monotonic()
    timed = installer.Installer(Layout(root))
    timed.install(pin)
    TIMES.update(timed.timings)  # the phases the Installer times itself
    TIMES["release step total"] = time.monotonic() - started
    return {"imports": T_IMPORTED - T_START, **TIMES}


class _NullHash:
    def update(self, data: object) -> None:
        return None

    def hexdigest(self) -> str:
        return "0" * 64


def _no_sync(*_args: object) -> None:
    return None


def _patch(owner: object, name: str, value: object) -> None:
    """Replace ``owner.name``; refuse when src/ no longer has it (the what-if would
    silently measure the code as it is)."""
    if not hasattr(owner, name):
        raise SystemExit(f"what-if: {owner!r} has no {name} any more: update bench/probe.py")
    setattr(owner, name, value)


def whatif(variant: str, root: Path, url: str, sha: str, version: str) -> dict[str, Any]:
    """The release step (fetch, verify, extract, records, syncs, swap), with one change.

    ``stdlib zlib``: archive_stream.py's inflate on the stdlib's zlib instead of zlib-ng (what the
    dependency buys); ``no early sync``: no flushes while the release arrives, only the final
    ones; ``no per-file hash``: the manifest's SHA-256s skipped (the most a hashing thread could
    take off the main thread); ``no sync at all``: no fsync, syncfs or writeback kick anywhere
    (what durability costs: the shell pipeline syncs nothing).
    """
    if variant == "stdlib zlib":
        _patch(archive_stream, "_zlib", zlib)
    elif variant == "no early sync":
        _patch(installer._EarlySync, "INTERVAL", 0)
    elif variant == "no per-file hash":
        _patch(archive, "hashlib", SimpleNamespace(sha256=_NullHash))
    elif variant == "no sync at all":
        _patch(installer._EarlySync, "INTERVAL", 0)
        _patch(fsops, "syncfs", _no_sync)
        _patch(fsops, "start_writeback", _no_sync)
        _patch(os, "fsync", _no_sync)
    elif variant != "as is":
        raise SystemExit(f"unknown what-if variant {variant!r}")
    pin = releases.resolve(version, url, sha, skip_sha=False)
    started = time.monotonic()
    installer.Installer(Layout(root)).install(pin)
    return {"step": time.monotonic() - started}


def main(argv: list[str]) -> int:
    profile_out = ""
    result: dict[str, Any]
    if "--profile" in argv:
        i = argv.index("--profile")
        profile_out = argv[i + 1]
        argv = argv[:i] + argv[i + 2 :]
    prof = cProfile.Profile() if profile_out else None
    if prof is not None:
        prof.enable()
    if argv[0] == "--whatif":
        result = whatif(argv[1], Path(argv[2]), argv[3], argv[4], argv[5])
    elif argv[0] in ("--noop", "--cli"):
        code = cli.main(argv[1:])
        result = {"exit": code}
    else:
        result = install(Path(argv[0]), argv[1], argv[2], argv[3])
    if prof is not None:
        prof.disable()
        prof.dump_stats(profile_out)
    sys.stdout.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
