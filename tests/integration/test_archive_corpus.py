"""A corpus of hostile and broken release archives: each refused with its own message.

Every archive carries the digest the test pins for it, so the refusal comes from the member
policy or the gzip/tar layer, never from a digest mismatch.  After each refusal the previous
install is byte-for-byte intact and the exit code is 1.
"""

from __future__ import annotations

import gzip
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.integration.conftest import CLI, Served, snapshot
from tests.support.archives import (
    Member,
    directory,
    hardlink,
    release_members,
    sha256_of,
    symlink,
    top_dir_name,
    write_tar_gz,
)
from tests.support.archives import file as tar_file
from tests.support.httpserver import HTTPTestServer

VERSION = "10.7.0"
TOP = top_dir_name(VERSION)
Members = list[Member]


def _without(*rels: str) -> Callable[[Members], Members]:
    names = {f"{TOP}/{rel}" for rel in rels}
    return lambda ms: [m for m in ms if m.name not in names]


def _plus(*extra: Member) -> Callable[[Members], Members]:
    return lambda ms: [*ms, *extra]


def _replace(rel: str, *new: Member) -> Callable[[Members], Members]:
    return lambda ms: [*(m for m in ms if m.name != f"{TOP}/{rel}"), *new]


def _mode(rel: str, mode: int) -> Callable[[Members], Members]:
    def change(ms: Members) -> Members:
        return [Member(**{**m.__dict__, "mode": mode}) if m.name == f"{TOP}/{rel}" else m
                for m in ms]  # fmt: skip

    return change


def _retop(top: str) -> Callable[[Members], Members]:
    return lambda ms: [Member(**{**m.__dict__, "name": top + m.name[len(TOP) :]}) for m in ms]


def _flat(ms: Members) -> Members:
    """The release without its top-level directory: files straight at the archive root."""
    return [Member(**{**m.__dict__, "name": m.name[len(TOP) + 1 :]}) for m in ms if m.name != TOP]


def _good_bytes(tmp: Path) -> bytes:
    return write_tar_gz(tmp / "good.tar.gz", release_members(VERSION)).read_bytes()


def _flip(offset: int) -> Callable[[bytes], bytes]:
    def flip(data: bytes) -> bytes:
        raw = bytearray(data)
        raw[offset] ^= 0xFF
        return bytes(raw)

    return flip


def _name_of_length(n: int) -> str:
    """A member name of ``n`` bytes, in components of at most 200."""
    head = f"{TOP}/resources/"
    body = "/".join("d" * 199 for _ in range((n - len(head)) // 200 + 1))
    return head + body[: n - len(head) - 1] + "f"


LONG_NAME = _name_of_length(4200)


@dataclass(frozen=True)
class Case:
    expect: str  # a fragment of the one-line error, unique to this case
    members: Callable[[Members], Members] | None = None  # mutate a normal release's members
    raw: Callable[[bytes], bytes] | None = None  # or mutate a normal release's bytes
    env: dict[str, str] = field(default_factory=dict)


CASES: dict[str, Case] = {
    # -- paths that leave the tree -----------------------------------------------------------
    "path traversal": Case("path traversal ('..')", _plus(tar_file(f"{TOP}/../../etc/x", "x"))),
    "absolute path": Case("absolute path", _plus(tar_file("/etc/evil", "x"))),
    "backslash name": Case("invalid name", _plus(tar_file(f"{TOP}\\..\\evil", "x"))),
    "symlink escape": Case(
        "symlink escapes the release tree", _plus(symlink(f"{TOP}/resources/up", "../../../etc"))
    ),
    "absolute symlink": Case(
        "symlink to absolute or empty target",
        _plus(symlink(f"{TOP}/resources/pw", "/etc/passwd")),
    ),
    "hardlink to absolute path": Case(
        "hard link leaves the release tree ('/etc/passwd')",
        _plus(hardlink(f"{TOP}/resources/pw", "/etc/passwd")),
    ),
    "hardlink traversal": Case(
        f"hard link leaves the release tree ('{TOP}/../../etc/shadow')",
        _plus(hardlink(f"{TOP}/resources/sh", f"{TOP}/../../etc/shadow")),
    ),
    "hardlink to another top dir": Case(
        "hard link leaves the release tree ('elsewhere/lemond')",
        _plus(hardlink(f"{TOP}/resources/x", "elsewhere/lemond")),
    ),
    "hardlink to nothing earlier": Case(
        "not a file earlier in the tree",
        _plus(hardlink(f"{TOP}/resources/x", f"{TOP}/resources/later.bin")),
    ),
    "path through a symlink": Case(
        "path goes through a symlink",
        _plus(symlink(f"{TOP}/res", "resources"), tar_file(f"{TOP}/res/evil.json", "{}")),
    ),
    "path through a file": Case(
        "path goes through a file", _plus(tar_file(f"{TOP}/LICENSE/evil", "x"))
    ),
    # Lexically inside (normpath keeps it in resources/..), but the kernel follows each `a`
    # back to resources/ before it applies a `..`: the link leads to /etc/shadow.
    "symlink through a symlink": Case(
        "symlink target 'a/a/a/a/../../../../etc/shadow' resolves outside the release tree",
        _plus(
            symlink(f"{TOP}/resources/a", "."),
            symlink(f"{TOP}/resources/x", "a/a/a/a/../../../../etc/shadow"),
        ),
    ),
    "symlink through a later symlink": Case(
        f"'{TOP}/resources/y': symlink target 'b/b/../../../etc/passwd' resolves outside",
        _plus(
            symlink(f"{TOP}/resources/y", "b/b/../../../etc/passwd"),
            symlink(f"{TOP}/resources/b", "."),
        ),
    ),
    "symlink loop": Case(
        "needs more than 40 symlink hops to resolve",
        _plus(symlink(f"{TOP}/resources/ping", "pong"), symlink(f"{TOP}/resources/pong", "ping")),
    ),
    "symlink where a directory is": Case(
        "a directory of that name is already in the archive",
        _plus(tar_file(f"{TOP}/resources/sub/x.json", "{}"), symlink(f"{TOP}/resources/sub", ".")),
    ),
    # -- special files and modes -------------------------------------------------------------
    "character device": Case(
        "character device member",
        _plus(Member(f"{TOP}/resources/null", kind="chardev", devmajor=1, devminor=3)),
    ),
    "block device": Case(
        "block device member",
        _plus(Member(f"{TOP}/resources/sda", kind="blockdev", devmajor=8, devminor=0)),
    ),
    "fifo": Case("fifo member", _plus(Member(f"{TOP}/resources/pipe", kind="fifo"))),
    "setuid lemond": Case("setuid bit set (mode 4755)", _mode("lemond", 0o4755)),
    "setgid file": Case("setgid bit set (mode 2755)", _mode("lemonade", 0o2755)),
    "sticky directory": Case("sticky bit set (mode 1777)", _mode("resources", 0o1777)),
    # -- names ------------------------------------------------------------------------------
    "duplicate member": Case(
        "duplicate member", _plus(tar_file(f"{TOP}/LICENSE", "a second LICENSE\n"))
    ),
    "case collision": Case(
        "ignoring case", _plus(tar_file(f"{TOP}/license", "a LICENSE by another case\n"))
    ),
    "desktop tray component": Case(
        "desktop/tray component", _plus(tar_file(f"{TOP}/lemonade-tray", "x", 0o755))
    ),
    "desktop web app": Case(
        "the desktop web app", _plus(tar_file(f"{TOP}/resources/web-app/index.html", "<html>"))
    ),
    "name longer than PATH_MAX": Case(
        f"name is {len(LONG_NAME)} bytes long, PATH_MAX is 4096", _plus(tar_file(LONG_NAME, "x"))
    ),
    "name component longer than NAME_MAX": Case(
        "name has a component of 256 bytes, NAME_MAX is 255",
        _plus(tar_file(f"{TOP}/resources/{'n' * 256}", "x")),
    ),
    "symlink target longer than PATH_MAX": Case(
        "symlink target is 4200 bytes long",
        _plus(symlink(f"{TOP}/resources/far", "x/" * 2100)),
    ),
    # Within PATH_MAX in the archive, past it once the staging directory's path is in front.
    "path too long for the staging directory": Case(
        "path too long to extract here", _plus(tar_file(_name_of_length(4090), "x"))
    ),
    # -- bombs (small caps injected through the environment) -------------------------------
    "size bomb": Case(
        "unpacks to more than 1000000 bytes",
        _plus(Member(f"{TOP}/resources/bomb.bin", fill_size=20_000_000)),
        env={"HAL0_LEMONADE_MAX_UNPACKED_BYTES": "1000000"},
    ),
    "entry bomb": Case(
        "more than 50 entries",
        _plus(*(tar_file(f"{TOP}/resources/e{i:03d}", "") for i in range(60))),
        env={"HAL0_LEMONADE_MAX_ENTRIES": "50"},
    ),
    "directory bomb": Case(
        "more than 50 directories",
        _plus(tar_file(f"{TOP}/resources/{'d/' * 60}f", "x")),  # one entry, 60 directories
        env={"HAL0_LEMONADE_MAX_ENTRIES": "50"},
    ),
    # -- layout -----------------------------------------------------------------------------
    "no top-level directory": Case("expected one top-level directory, found a file", _flat),
    "two top-level directories": Case(
        "a second top-level entry besides", _plus(directory("other"), tar_file("other/x", "x"))
    ),
    "wrong version inside": Case("not Lemonade 10.7.0", _retop(top_dir_name("10.7.1"))),
    "missing lemond": Case("lemond is missing", _without("lemond")),
    "missing server_models.json": Case(
        "resources/server_models.json is missing", _without("resources/server_models.json")
    ),
    "lemond is a directory": Case(
        "lemond is a directory",
        _replace("lemond", directory(f"{TOP}/lemond"), tar_file(f"{TOP}/lemond/x", "x", 0o755)),
    ),
    "lemond is a symlink": Case(
        "lemond is a symlink", _replace("lemond", symlink(f"{TOP}/lemond", "lemonade"))
    ),
    "lemond not executable": Case("lemond is not executable", _mode("lemond", 0o644)),
    "empty tar": Case("the archive holds no files", lambda _ms: []),
    # -- the compressed stream ----------------------------------------------------------------
    "truncated gzip": Case("the archive is truncated", raw=lambda b: b[: len(b) // 2]),
    "gzip trailer cut": Case("end-of-stream marker", raw=lambda b: b[:-6]),
    "bad gzip crc": Case("CRC check failed", raw=_flip(-6)),
    "invalid deflate data": Case("invalid deflate data", raw=_flip(11)),
    "garbage bytes": Case(
        "not a gzip-compressed archive (it starts with b'\\x00\\x01')",
        raw=lambda b: bytes(range(256)) * 8,
    ),
    "a zip file": Case("it starts with b'PK'", raw=lambda b: b"PK\x03\x04" + b[4:]),
    "garbage after the gzip stream": Case(
        "unexpected bytes after the end of the gzip stream", raw=lambda b: b + b"garbage!"
    ),
    "zero padding after the gzip stream": Case(
        "more than 1048576 zero bytes after the gzip stream", raw=lambda b: b + bytes(2 << 20)
    ),
    "data after the end of the tar archive": Case(
        "more than 1048576 bytes after the end of the tar archive",
        raw=lambda b: gzip.compress(gzip.decompress(b) + bytes(2 << 20), mtime=0),
    ),
    "compressed archive over the cap": Case(
        "the compressed archive is larger than 1000000 bytes",
        raw=lambda b: b + gzip.compress(b"", mtime=0) * 60_000,  # each inflates to nothing
        env={"HAL0_LEMONADE_MAX_UNPACKED_BYTES": "1000000"},
    ),
    "zero-byte file": Case("the archive is a zero-byte file", raw=lambda b: b""),
    "gzip of nothing": Case("no tar data inside the gzip stream", raw=lambda b: gzip.compress(b"")),
    "gzip of junk": Case(
        "not a tar archive inside the gzip stream",
        raw=lambda b: gzip.compress(bytes(range(256)) * 40, mtime=0),
    ),
}


def test_the_corpus_is_big_and_every_message_is_its_own() -> None:
    assert len(CASES) >= 25
    fragments = [case.expect for case in CASES.values()]
    for i, a in enumerate(fragments):
        for j, b in enumerate(fragments):
            assert i == j or a not in b, f"{a!r} does not single out its case (also in {b!r})"


@pytest.fixture
def build_case(
    http_server: HTTPTestServer, tmp_path: Path
) -> Callable[[str], tuple[str, str, Path]]:
    def build(name: str) -> tuple[str, str, Path]:
        case = CASES[name]
        slug = name.replace(" ", "-")
        path = tmp_path / "corpus" / f"{slug}.tar.gz"
        if case.members is not None:
            write_tar_gz(path, case.members(release_members(VERSION)))
        else:
            assert case.raw is not None
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(case.raw(_good_bytes(tmp_path)))
        return http_server.add(f"/corpus/{path.name}", path), sha256_of(path), path

    return build


@pytest.mark.parametrize("name", list(CASES))
def test_hostile_archive_is_refused_and_the_install_is_intact(
    cli: CLI,
    installed: tuple[Path, Served],
    build_case: Callable[[str], tuple[str, str, Path]],
    name: str,
) -> None:
    root, old = installed
    url, digest, _path = build_case(name)
    before = snapshot(root, dir_mtimes=False)
    run = cli(
        "install", "--root", root, "--version", VERSION, "--artifact", url, "--sha256", digest,
        "--json", env=CASES[name].env,
    )  # fmt: skip
    assert run.code == 1, run.out
    error = run.json["error"]
    assert CASES[name].expect in error, error
    assert "SHA-256 mismatch" not in error
    assert "\n" not in error and "hal0_lemonade/" not in run.err
    assert run.step("Lemonade release")["status"] == "failed"
    assert snapshot(root, dir_mtimes=False) == before
    assert not (root / "etc/evil").exists() and not (root.parent / "evil").exists()
    assert str((root / "opt/lemonade").readlink()).endswith("10.6.0-" + old.release.sha256[:12])


def test_the_same_archive_from_a_local_path_is_refused_the_same_way(
    cli: CLI, installed: tuple[Path, Served], build_case: Callable[[str], tuple[str, str, Path]]
) -> None:
    root, _ = installed
    _url, digest, path = build_case("symlink escape")
    before = snapshot(root, dir_mtimes=False)
    run = cli(
        "install", "--root", root, "--version", VERSION, "--artifact", path, "--sha256", digest,
        "--json",
    )  # fmt: skip
    assert run.code == 1
    assert "symlink escapes the release tree" in run.json["error"]
    assert snapshot(root, dir_mtimes=False) == before


def test_a_sound_archive_passes_the_same_policy(
    cli: CLI, installed: tuple[Path, Served], http_server: HTTPTestServer, tmp_path: Path
) -> None:
    """The control: the corpus's base archive, untouched, installs (so the refusals are real)."""
    root, _ = installed
    path = tmp_path / "good.tar.gz"
    path.write_bytes(_good_bytes(tmp_path))
    url = http_server.add("/corpus/good.tar.gz", path)
    run = cli(
        "install", "--root", root, "--version", VERSION, "--artifact", url,
        "--sha256", sha256_of(path), "--json",
    )  # fmt: skip
    assert run.code == 0, run.out
    assert (root / "opt/lemonade/.installed-version").read_text().startswith(VERSION)


@pytest.mark.parametrize(
    ("name", "value"),
    [("HAL0_LEMONADE_MAX_ENTRIES", "0"), ("HAL0_LEMONADE_MAX_UNPACKED_BYTES", "lots")],
)
def test_a_bad_limit_variable_is_a_usage_error_before_anything_runs(
    cli: CLI,
    installed: tuple[Path, Served],
    build_case: Callable[[str], tuple[str, str, Path]],
    name: str,
    value: str,
) -> None:
    root, _ = installed
    url, digest, _path = build_case("missing lemond")
    run = cli(
        "install", "--root", root, "--version", VERSION, "--artifact", url, "--sha256", digest,
        env={name: value},
    )  # fmt: skip
    assert run.code == 2
    assert f"{name}={value!r} is not a positive whole number" in run.err
    assert "hal0_lemonade/" not in run.err  # (the loopback server may log its own)
