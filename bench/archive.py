"""Release-like archives for the benchmark, built with tests/support/archives.py.

A real Lemonade release is two large binaries plus a few hundred ~400 KB files, 198 MB
unpacked and ~53 MB as .tar.gz (ratio ~0.27).  The stand-in keeps the layout valid (the
required files come from ``release_members``, so lemond is the test suite's fake daemon) and
fills the bulk with a mix that compresses and inflates like machine code: 64 KiB chunks drawn
from a token-based "code" pool (Zipf-distributed byte strings, gzip ratio ~0.21), with about
6% incompressible random chunks.  Archives are cached under .cache/bench/ by a key over the
spec and the generator's sources, so they are built once per machine.
"""

from __future__ import annotations

import hashlib
import io
import json
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tests.support import archives
from tests.support.archives import Member, directory, release_members, top_dir_name, write_tar_gz

VERSION = "10.6.0"
CHUNK = 64 * 1024
RANDOM_SHARE = 0.06
KB = 1000
MB = 1000 * KB
MiB = 1 << 20


@dataclass(frozen=True)
class Spec:
    label: str
    big_files: int
    big_size: int
    small_files: int
    small_size: int

    @property
    def payload_bytes(self) -> int:
        return self.big_files * self.big_size + self.small_files * self.small_size


# 2 binaries of 39 MB + 298 files of 400 KB (+ the 6 required files) = 306 files, ~198 MB.
RELEASE_200MB = Spec("release-200MB", 2, 39 * MB, 298, 400 * KB)
# The same mix scaled to 1 GiB unpacked: 2 x 256 MiB + 1310 x 400 KiB.
RELEASE_1GIB = Spec("release-1GiB", 2, 256 * MiB, 1310, 400 * 1024)


def _code_pool(seed: int = 1, tokens: int = 400_000) -> bytes:
    """~3.7 MB of byte strings from a 256-token Zipf vocabulary: gzip -6 ratio ~0.21."""
    rng = random.Random(seed)  # noqa: S311 - reproducible filler, not crypto
    vocab = [rng.randbytes(rng.randint(1, 16)) for _ in range(256)]
    weights = [1.0 / (i + 1) for i in range(len(vocab))]
    return b"".join(rng.choices(vocab, weights, k=tokens))


_POOL: list[bytes] = []


def code_pool() -> bytes:
    if not _POOL:
        _POOL.append(_code_pool())
    return _POOL[0]


class _MixedReader(io.RawIOBase):
    """Streams a member's content chunk by chunk; never holds more than one chunk."""

    def __init__(self, size: int, seed: int, pool: bytes) -> None:
        self._left = size
        self._rng = random.Random(seed)  # noqa: S311 - reproducible filler
        self._pool = pool
        self._pending = memoryview(b"")

    def readable(self) -> bool:
        return True

    def _next(self) -> memoryview:
        n = min(CHUNK, self._left)
        self._left -= n
        if self._rng.random() < RANDOM_SHARE:
            return memoryview(self._rng.randbytes(n))
        start = self._rng.randrange(len(self._pool) - CHUNK)
        return memoryview(self._pool)[start : start + n]

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        if not self._pending:
            if self._left <= 0:
                return 0
            self._pending = self._next()
        n = min(len(view), len(self._pending))
        view[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        return n


@dataclass(frozen=True)
class MixedMember(Member):
    """A file member whose ``fill_size`` bytes are the code/random mix above."""

    pool: bytes = field(default=b"", repr=False, compare=False)

    def stream(self) -> io.BufferedReader:
        return io.BufferedReader(_MixedReader(self.fill_size, self.fill_seed, self.pool), CHUNK)


def members(spec: Spec) -> list[Member]:
    pool = code_pool()
    top = top_dir_name(VERSION)
    out = release_members(VERSION)
    out += [directory(f"{top}/lib"), directory(f"{top}/resources/assets")]
    for i in range(spec.big_files):
        out.append(
            MixedMember(
                name=f"{top}/lib/libbench-{i}.so",
                mode=0o755,
                fill_size=spec.big_size,
                fill_seed=10_000 + i,
                pool=pool,
            )
        )
    for i in range(spec.small_files):
        out.append(
            MixedMember(
                name=f"{top}/resources/assets/asset-{i:04d}.bin",
                fill_size=spec.small_size,
                fill_seed=i,
                pool=pool,
            )
        )
    return sorted(out, key=lambda m: m.name)


@dataclass(frozen=True)
class Built:
    path: Path
    sha256: str
    version: str
    unpacked_bytes: int
    gz_bytes: int
    files: int
    build_seconds: float

    @property
    def name(self) -> str:
        return self.path.name


def _key(spec: Spec) -> str:
    digest = hashlib.sha256(json.dumps(asdict(spec), sort_keys=True).encode())
    for source in (Path(__file__), Path(archives.__file__), archives.FAKE_LEMOND):
        digest.update(source.read_bytes())
    return digest.hexdigest()[:12]


def build(spec: Spec, cache_dir: Path, log: Any = print) -> Built:
    """Build (or reuse from ``cache_dir``) the archive for ``spec``."""
    key = _key(spec)
    path = cache_dir / f"{spec.label}-{key}" / archives.archive_name(VERSION)
    meta = path.with_name("meta.json")
    if path.is_file() and meta.is_file():
        data = json.loads(meta.read_text())
        return Built(
            path,
            data["sha256"],
            VERSION,
            data["unpacked"],
            path.stat().st_size,
            data["files"],
            data["build_seconds"],
        )
    log(f"building {spec.label} archive (once; cached in {path.parent}) ...")
    started = time.monotonic()
    mem = members(spec)
    tmp = path.with_name(path.name + ".tmp")
    write_tar_gz(tmp, mem)
    sha = archives.sha256_of(tmp)
    tmp.replace(path)
    seconds = time.monotonic() - started
    files = sum(1 for m in mem if m.kind == "file")
    unpacked = sum(m.size for m in mem)
    meta.write_text(
        json.dumps({"sha256": sha, "unpacked": unpacked, "files": files, "build_seconds": seconds})
    )
    return Built(path, sha, VERSION, unpacked, path.stat().st_size, files, seconds)
