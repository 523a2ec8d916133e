"""Child process: one install with the phases timed (or profiled), result as JSON on stdout.

``python -m bench.probe ROOT URL SHA256 VERSION [--profile OUT.pstats]``.  Runs the real
``release.Installer`` (the code ``hal0-lemonade install`` uses for the release step) with
thin timing wrappers around its phases; nothing in src/ is changed.  ``--noop ROOT ARGS...``
instead profiles a whole CLI run (``cli.main``) on a converged root; ``--whatif VARIANTS DEST
URL SHA256`` times the bare data path with the changes proposed in BENCHMARKS.md.
"""

from __future__ import annotations

import time

T_START = time.monotonic()

import cProfile  # noqa: E402 - the import time of what follows is part of the measurement
import importlib  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402
from types import SimpleNamespace  # noqa: E402
from typing import Any, BinaryIO  # noqa: E402

from hal0_lemonade import archive, cli, fetch, fsops, releases  # noqa: E402
from hal0_lemonade.layout import Layout  # noqa: E402
from hal0_lemonade.releases import Pin  # noqa: E402
from hal0_lemonade.resources import release  # noqa: E402

T_IMPORTED = time.monotonic()
PYDEPS = Path(__file__).resolve().parent.parent / ".cache" / "bench" / "pydeps"
TIMES: dict[str, float] = {}


class TimedInstaller(release.Installer):
    def _extract(
        self,
        body: fetch.Body,
        pin: Pin,
        staging: Path,
        *,
        prefix: BinaryIO | None = None,
        tee: BinaryIO | None = None,
    ) -> archive.Extracted:
        started = time.monotonic()
        try:
            return super()._extract(body, pin, staging, prefix=prefix, tee=tee)
        finally:
            TIMES["fetch+verify+extract"] = time.monotonic() - started

    def _write_records(self, tree: Path, pin: Pin, extracted: archive.Extracted) -> None:
        started = time.monotonic()
        super()._write_records(tree, pin, extracted)
        TIMES["manifest+marker"] = time.monotonic() - started


_real_syncfs = fsops.syncfs


def _timed_syncfs(path: Path) -> None:
    started = time.monotonic()
    _real_syncfs(path)
    TIMES["syncfs"] = time.monotonic() - started


def install(root: Path, url: str, sha: str, version: str) -> dict[str, Any]:
    fsops.syncfs = _timed_syncfs
    pin = releases.resolve(version, url, sha, skip_sha=False)
    started = time.monotonic()
    TimedInstaller(Layout(root)).install(pin)
    TIMES["release step total"] = time.monotonic() - started
    return {"imports": T_IMPORTED - T_START, **TIMES}


class _NullHash:
    def update(self, data: object) -> None:
        return None

    def hexdigest(self) -> str:
        return "0" * 64


WHATIF_MODULES = {"isal": "isal.igzip", "zlibng": "zlib_ng.gzip_ng"}


class _ReadInto(io.RawIOBase):
    """isal's and zlib-ng's GzipFile want ``readinto``; archive.py hands them ``read`` only."""

    def __init__(self, raw: Any) -> None:
        super().__init__()
        self._raw = raw

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self._raw.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


def _gzip_shim(module_name: str) -> SimpleNamespace:
    module = importlib.import_module(module_name)

    def gzip_file(*, fileobj: Any, mode: str) -> Any:
        return module.GzipFile(fileobj=_ReadInto(fileobj), mode=mode)

    return SimpleNamespace(GzipFile=gzip_file, BadGzipFile=module.BadGzipFile)


def whatif(variants: set[str], dest: Path, url: str, sha: str) -> dict[str, Any]:
    """The release data path (HTTP -> SHA-256 -> gzip -> tar -> files), changed as named.

    ``isal``/``zlibng``: archive.py's ``gzip`` swapped for the drop-in module; ``bigbuf``: a
    1 MiB BufferedReader between the hashing reader and gzip (3.11's GzipFile reads 8 KiB at
    a time); ``nohash``: no per-file SHA-256 (the cost a hashing thread could take off the
    critical path).  No download-cache tee, no syncfs: the pure data path.
    """
    sys.path.append(str(PYDEPS))  # isal / zlib-ng, when `python -m bench --fast-inflate` put them
    for name in variants & WHATIF_MODULES.keys():
        archive.gzip = _gzip_shim(WHATIF_MODULES[name])  # type: ignore[attr-defined,assignment]
    if "nohash" in variants:
        archive.hashlib = SimpleNamespace(sha256=_NullHash)  # type: ignore[attr-defined,assignment]
    started = time.monotonic()
    reader = fetch.HashingReader(fetch.HttpBody(url, timeout=30.0))
    stream: BinaryIO = reader  # type: ignore[assignment]
    if "bigbuf" in variants:
        stream = io.BufferedReader(reader, 1 << 20)
    archive.extract(stream, dest)
    reader.verify(sha, what="bench")
    return {"seconds": time.monotonic() - started}


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
        variants = {v for v in argv[1].split(",") if v and v != "stdlib"}
        result = whatif(variants, Path(argv[2]), argv[3], argv[4])
    elif argv[0] == "--noop":
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
