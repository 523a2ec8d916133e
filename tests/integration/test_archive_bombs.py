"""Hostile archives and sources that try to make the extractor's memory or work grow with a
size the attacker picks, each performed for real and measured in its own process.

The archive bytes are untrusted until the digest of the whole file matches, at the very end,
so the extractor has to stay small against any bytes: a header of a GiB, a sparse map without
end, zeros without end.  Each case runs the real extraction in a child process (the CLI,
downloading from a loopback server, or ``archive.extract`` on an endless source) and takes
the child's peak RSS.  Measured this way, a normal install (256 MiB unpacked) peaks near
30 MiB; before the caps, the 1 GiB PAX header took the CLI to 4.1 GiB.
"""

from __future__ import annotations

import gzip
import json
import os
import struct
import subprocess
import sys
import tarfile
import tempfile
import textwrap
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.archives import (
    FIXED_MTIME,
    release_members,
    sha256_of,
    top_dir_name,
    write_tar_gz,
)
from tests.support.httpserver import HTTPTestServer

VERSION = "10.7.0"
TOP = top_dir_name(VERSION)
GiB = 1 << 30
MiB = 1 << 20
PEAK_RSS_LIMIT = 200 * MiB
TIMEOUT = 60.0  # seconds; each refusal below takes well under one
# Where the hostile header goes: in front of the second member (the first, the top directory,
# is one 512-byte block), so the refusal has a position to name that is not zero.
AT = 512


# Run first in every child: at exit, report the process's own peak RSS.  VmHWM, because it
# starts afresh at exec; the child's ru_maxrss (getrusage, os.wait4) does not: it carries the
# high-water mark of the parent it was spawned from, here the test process.
_PEAK_AT_EXIT = textwrap.dedent(
    """
    import atexit, sys

    def _peak():
        with open("/proc/self/status") as status:
            kib = next(line.split()[1] for line in status if line.startswith("VmHWM:"))
        print("peak-rss-kib", kib, file=sys.stderr)

    atexit.register(_peak)
    """
)
# The CLI as the console script starts it (entry.run runs atexit hooks before its quick exit).
_CLI = "import runpy; runpy.run_module('hal0_lemonade', run_name='__main__', alter_sys=True)"


@dataclass(frozen=True)
class Measured:
    code: int
    out: str
    err: str
    peak_rss: int  # bytes

    @property
    def error(self) -> str:
        """The CLI's one-line error (from --json)."""
        assert self.code == 1, (self.code, self.out[-2000:], self.err[-2000:])
        return str(json.loads(self.out)["error"])


def _measured(code: str, args: Sequence[str], env: dict[str, str] | None = None) -> Measured:
    """Run ``python -c CODE ARGS`` to its end and take its peak RSS."""
    child_env = {k: v for k, v in os.environ.items() if k != "HAL0_SKIP_LEMONADE_SHA"}
    child_env.update(env or {})
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        try:
            done = subprocess.run(
                [sys.executable, "-c", _PEAK_AT_EXIT + code, *args],
                stdout=out, stderr=err, env=child_env, timeout=TIMEOUT, check=False,
            )  # fmt: skip
        except subprocess.TimeoutExpired:
            pytest.fail(f"still running after {TIMEOUT:g} s")
        # At most a MiB of each: before the caps, one refusal quoted a name of a GiB.
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(MiB).decode(errors="replace"), err.read(MiB).decode()
    peak = [line.split()[1] for line in stderr.splitlines() if line.startswith("peak-rss-kib ")]
    assert peak, stderr[-2000:]
    return Measured(done.returncode, stdout, stderr, int(peak[-1]) * 1024)


def _install(root: Path, url: str, digest: str) -> Measured:
    args = ["install", "--root", str(root), "--version", VERSION, "--artifact", url]
    return _measured(_CLI, [*args, "--sha256", digest, "--json"])


# -- building the bombs --------------------------------------------------------------------
# A part of the inflated stream: bytes, and how many times they follow each other.
Part = tuple[bytes, int]


def _gzip(parts: Sequence[Part]) -> bytes:
    """One gzip member holding the parts in order, built without compressing every byte.

    After a full flush the compressor forgets its window, so the block it emits for the next
    part decodes on its own and can simply be repeated: a GiB of ``a`` costs compressing one
    MiB (and a CRC over the GiB), and comes out at about a MB, as a hostile server sends it.
    """
    comp = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    out = [b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff"]
    crc = size = 0
    for data, times in parts:
        out.append((comp.compress(data) + comp.flush(zlib.Z_FULL_FLUSH)) * times)
        for _ in range(times):
            crc = zlib.crc32(data, crc)
        size += len(data) * times
    out.append(comp.flush())
    out.append(struct.pack("<II", crc, size & 0xFFFFFFFF))
    return b"".join(out)


def _header(name: str, kind: bytes, size: int = 0) -> bytes:
    info = tarfile.TarInfo(name)
    info.type, info.size, info.mtime, info.mode = kind, size, FIXED_MTIME, 0o644
    return info.tobuf(tarfile.USTAR_FORMAT, "utf-8", "surrogateescape")


def _checksummed(block: bytearray) -> bytes:
    """``block`` with its header checksum recomputed (after patching GNU-only fields)."""
    block[148:156] = b" " * 8
    block[148:155] = b"%06o\0" % sum(block)
    return bytes(block)


def _pad(n: int) -> bytes:
    return bytes(-n % 512)


def _release_tar(tmp: Path) -> bytes:
    return gzip.decompress(write_tar_gz(tmp / "good.tar.gz", release_members(VERSION)).read_bytes())


def _around(tar: bytes, *parts: Part) -> list[Part]:
    """The release's tar stream with ``parts`` in front of its second header."""
    return [(tar[:AT], 1), *parts, (tar[AT:], 1)]


def _repeat(unit: bytes, size: int) -> list[Part]:
    """``size`` bytes of ``unit`` over and over, as parts of one MiB."""
    per = MiB // len(unit)
    whole, rest = divmod(size, per * len(unit))
    assert rest % len(unit) == 0
    return [(unit * per, whole), (unit * (rest // len(unit)), 1)]


def _pax_record(text: bytes) -> bytes:
    """``"<length> <keyword>=<value>\\n"``, the length counting its own digits."""
    n = len(text) + 3
    while len(b"%d %s\n" % (n, text)) != n:
        n += 1
    return b"%d %s\n" % (n, text)


def _pax_bomb(kind: bytes) -> Callable[[bytes], list[Part]]:
    """A PAX header ('x': the next member's, 'g': global) of one valid 1 GiB record."""

    def build(tar: bytes) -> list[Part]:
        head = b"%d comment=" % GiB
        fill = GiB - len(head) - 1  # the record ends in "\n"
        return _around(
            tar,
            (_header("././@PaxHeader", kind, GiB) + head, 1),
            *_repeat(b"a", fill - 1),
            (b"a\n", 1),
        )

    return build


def _gnu_long_bomb(kind: bytes) -> Callable[[bytes], list[Part]]:
    """A GNU long name ('L') or long link name ('K') of 1 GiB for the next member."""

    def build(tar: bytes) -> list[Part]:
        return _around(tar, (_header("././@LongLink", kind, GiB), 1), *_repeat(b"a", GiB))

    return build


def _sparse_extension_bomb(tar: bytes) -> list[Part]:
    """An old GNU sparse member ('S') followed by 128 MiB of extension blocks, each saying
    that another follows: tarfile keeps 21 (offset, size) tuples of every 512-byte block."""
    block = bytearray(_header(f"{TOP}/resources/sparse.bin", tarfile.GNUTYPE_SPARSE))
    block[482] = 1  # isextended
    entries = b"%011o\0" % 1 * 42  # 21 (offset, size) pairs of 12-byte octal fields
    more, last = entries + b"\1" + bytes(7), entries + bytes(8)
    size = 128 * MiB
    return _around(tar, (_checksummed(block), 1), *_repeat(more, size - 512), (last, 1))


def _sparse_map_bomb(tar: bytes) -> list[Part]:
    """A GNU sparse 1.0 member whose map (at the start of its data, which tarfile reads as
    part of the header) holds 16 Mi pairs: tarfile builds an int per number, a tuple per pair."""
    records = b"".join(
        _pax_record(r)
        for r in (b"GNU.sparse.major=1", b"GNU.sparse.minor=0",
                  f"GNU.sparse.name={TOP}/resources/s.bin".encode(), b"GNU.sparse.realsize=1")
    )  # fmt: skip
    pairs = 16 * MiB
    head = b"%d\n" % pairs
    size = len(head) + 4 * pairs
    member = _header(f"{TOP}/resources/GNUSparseFile.0/s.bin", tarfile.REGTYPE, size)
    return _around(
        tar,
        (_header("././@PaxHeader", tarfile.XHDTYPE, len(records)) + records, 1),
        (_pad(len(records)) + member + head, 1),
        *_repeat(b"1\n1\n", 4 * pairs),
        (_pad(size), 1),
    )


BOMBS: dict[str, Callable[[bytes], list[Part]]] = {
    "PAX header of 1 GiB": _pax_bomb(tarfile.XHDTYPE),
    "global PAX header of 1 GiB": _pax_bomb(tarfile.XGLTYPE),
    "GNU long name of 1 GiB": _gnu_long_bomb(tarfile.GNUTYPE_LONGNAME),
    "GNU long link name of 1 GiB": _gnu_long_bomb(tarfile.GNUTYPE_LONGLINK),
    "GNU sparse extension blocks": _sparse_extension_bomb,
    "GNU sparse 1.0 map": _sparse_map_bomb,
}


def _global_pile(tar: bytes) -> list[Part]:
    """Members each after a global PAX header of a new record of 1000 KiB: every one is under
    the cap for one member's headers, but global records stay in force and pile up."""
    parts = [(tar[:AT], 1)]
    value = 1000 * 1024
    for i in range(400):
        head = b"k%03d=" % i
        n = len(_pax_record(head + b"v" * value))
        parts += [
            (_header("././@GlobalHead", tarfile.XGLTYPE, n) + b"%d %s" % (n, head), 1),
            (b"v" * 1024, value // 1024),
            (b"\n" + _pad(n) + _header(f"{TOP}/g{i:03d}", tarfile.REGTYPE), 1),
        ]
    return [*parts, (tar[AT:], 1)]


@pytest.fixture(scope="module")
def release_tar(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return _release_tar(tmp_path_factory.mktemp("bombs"))


def test_the_bomb_builder_makes_what_it_says(tmp_path: Path) -> None:
    """The shortcut in _gzip (repeating a flushed block) yields the stream it describes."""
    parts = [(b"head", 1), *_repeat(b"xy", 3 * MiB + 6), (b"tail", 1)]
    data = zlib.decompress(_gzip(parts), wbits=31)
    assert data == b"head" + b"xy" * (3 * MiB // 2 + 3) + b"tail"
    assert _pax_record(b"a=b") == b"6 a=b\n" and len(_pax_record(b"k=" + b"v" * 97)) == 104


@pytest.mark.parametrize("name", list(BOMBS))
def test_a_header_bomb_is_refused_with_flat_memory(
    name: str, release_tar: bytes, root: Path, http_server: HTTPTestServer, tmp_path: Path
) -> None:
    path = tmp_path / "bomb.tar.gz"
    path.write_bytes(_gzip(BOMBS[name](release_tar)))
    assert path.stat().st_size < 4 * MiB  # what the server sends is small
    url = http_server.add("/bomb.tar.gz", path)
    run = _install(root, url, sha256_of(path))
    assert (
        f"refusing archive member #2 (at byte {AT} of the tar stream): "
        "its header records exceed 1048576 bytes"
    ) in run.error
    assert "\n" not in run.error
    assert run.peak_rss < PEAK_RSS_LIMIT, f"peak RSS {run.peak_rss >> 20} MiB"
    assert not (root / "opt/lemonade").exists()


def test_global_headers_that_pile_up_are_refused_with_flat_memory(
    release_tar: bytes, root: Path, http_server: HTTPTestServer, tmp_path: Path
) -> None:
    path = tmp_path / "pile.tar.gz"
    path.write_bytes(_gzip(_global_pile(release_tar)))
    run = _install(root, http_server.add("/pile.tar.gz", path), sha256_of(path))
    assert (
        f"refusing archive member '{TOP}/g001': the global PAX headers before it hold more "
        "than 64 records or 1048576 bytes"
    ) in run.error
    assert run.peak_rss < PEAK_RSS_LIMIT, f"peak RSS {run.peak_rss >> 20} MiB"


# -- endless sources -----------------------------------------------------------------------
# archive.extract on a source that never ends: the CLI cannot serve as the harness here,
# because after a refusal it reads the download to its end for the digest.
_ENDLESS = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path
    from hal0_lemonade import archive
    from hal0_lemonade.environment import Environment
    from hal0_lemonade.errors import ArchiveError

    head, unit = Path(sys.argv[1]).read_bytes(), Path(sys.argv[2]).read_bytes()
    dest = Path(sys.argv[3])

    class Endless:
        read_bytes = 0

        def read(self, size=-1):
            global head
            out = head[:size] if head else unit[:size]
            head = head[len(out):]
            self.read_bytes += len(out)
            return out

    source = Endless()
    try:
        archive.extract(source, dest, Environment.read().limits)  # the caps the CLI uses
        error = None
    except ArchiveError as exc:
        error = exc.message
    print(json.dumps({"error": error, "read": source.read_bytes}))
    sys.stdout.flush()
    """
)


@pytest.mark.parametrize(
    ("unit", "env", "expect", "most"),
    [
        pytest.param(
            bytes(MiB), {}, "more than 1048576 zero bytes after the gzip stream", 16 * MiB,
            id="zeros after the gzip stream",
        ),
        pytest.param(
            zlib.compress(b"", wbits=31) * 50_000,  # each inflates to nothing
            {"HAL0_LEMONADE_MAX_UNPACKED_BYTES": "1000000"},
            "the compressed archive is larger than 1000000 bytes", 16 * MiB,
            id="empty gzip members after the gzip stream",
        ),
    ],
)  # fmt: skip
def test_an_endless_source_is_cut_off(
    unit: bytes, env: dict[str, str], expect: str, most: int, tmp_path: Path
) -> None:
    good = write_tar_gz(tmp_path / "good.tar.gz", release_members(VERSION))
    (tmp_path / "unit").write_bytes(unit)
    (tmp_path / "dest").mkdir()
    run = _measured(_ENDLESS, [str(good), str(tmp_path / "unit"), str(tmp_path / "dest")], env)
    assert run.code == 0, run.err[-2000:]
    result = json.loads(run.out)
    assert result["error"] is not None and expect in result["error"], result
    assert result["read"] < most
    assert run.peak_rss < PEAK_RSS_LIMIT
