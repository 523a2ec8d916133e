"""A download server chooses every delay and every length; none may make the installer hang
or grow without bound.

Each attack runs against a real ``python -m hal0_lemonade install`` over a root where 10.6.0
is installed, from the loopback server on 127.0.0.1.  The installer is a child process so that
a hang -- the bug these guard against -- is killed after ``GUARD`` seconds and reported
instead of hanging the suite.  A refused download must end within ``CEILING`` seconds (a
generous bound, not a speed claim) with exit 1 and one clear line, and leave the installed
release as it was: the only change allowed is the partial download kept for a resume.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.integration.conftest import CLI, Served, Snapshot, install_args, snapshot
from tests.support.httpserver import (
    Fault,
    HTTPTestServer,
    LongBody,
    Redirect,
    SlowError,
    SlowHead,
    Stall,
    Trickle,
    free_port,
)

CEILING = 20.0  # seconds a refused download may take, at the most
GUARD = 45.0  # seconds after which the child is killed: it hung
NEW = "10.6.1"
PADDING = 300_000  # incompressible bytes: an archive of ~300 kB, many chunks
TIMEOUT = "HAL0_LEMONADE_HTTP_TIMEOUT"
DEADLINE = "HAL0_LEMONADE_HTTP_DEADLINE"

pytestmark = pytest.mark.usefixtures("join_server_threads")


@dataclass
class Child:
    code: int
    out: str
    err: str
    seconds: float
    max_rss_kib: int

    @property
    def error(self) -> str:
        error: str = json.loads(self.out)["error"]
        return error


def _run_installer(args: list[str | Path], env: dict[str, str], logs: Path) -> Child:
    """Run the installer as a child process: its exit, output, duration and peak RSS.

    ``os.wait4`` reports the child's own peak RSS.  Output goes to files, so a child that
    writes a lot cannot block on a full pipe while it is polled.
    """
    clean = {k: v for k, v in os.environ.items() if not k.startswith("HAL0_")}
    argv = [sys.executable, "-m", "hal0_lemonade", *map(str, args)]
    started = time.monotonic()
    with (logs / "out").open("w+") as out, (logs / "err").open("w+") as err:
        proc = subprocess.Popen(argv, stdout=out, stderr=err, env={**clean, **env})
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() - started > GUARD:
                proc.kill()
                proc.wait()
                pytest.fail(f"the installer hung: killed after {GUARD:g} s")
            time.sleep(0.02)
        proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
        seconds = time.monotonic() - started
        out.seek(0)
        err.seek(0)
        return Child(proc.returncode, out.read(), err.read(), seconds, usage.ru_maxrss)


class _PeakSize(threading.Thread):
    """The largest size ``path`` reached while watched (polled every few ms)."""

    def __init__(self, path: Path) -> None:
        super().__init__(daemon=True)
        self.path = path
        self.peak = 0
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.wait(0.003):
            with contextlib.suppress(FileNotFoundError):
                self.peak = max(self.peak, self.path.stat().st_size)

    def __enter__(self) -> _PeakSize:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self.join()


@dataclass(frozen=True)
class Attack:
    fault: Fault
    expect: str  # a fragment of the one-line error
    env: dict[str, str] = field(default_factory=dict)
    kept: bool = False  # whether bytes are kept for a resume (and the hint says so)
    part_cap: int | None = None  # the most the cache's .part may hold; None: the archive's size


# Caps for the endless-tail case: the release unpacks to ~312 kB in 10 entries.
SMALL_CAPS = {"HAL0_LEMONADE_MAX_UNPACKED_BYTES": "1000000", "HAL0_LEMONADE_MAX_ENTRIES": "50"}
# The download cap those caps give: unpacked + 0.1% + 4 KiB per entry + 1 MiB.
SMALL_CAP_BYTES = 1_000_000 + 1_000 + 50 * 4096 + (1 << 20)

ATTACKS: dict[str, Attack] = {
    # Issue row 8: each reconnect re-delivers the same first kB, which the installer skips;
    # none of it is new, so four failures in a row end the download.
    "stalls after the same first kB on every connection, ignoring Range": Attack(
        Stall(seconds=30, after_bytes=1024),
        "4 attempts in a row got no further than byte 1024 (last: no data for 0.5 s (stalled))",
        {TIMEOUT: "0.5"},
        kept=True,
    ),
    "trickles a byte every 0.3 s, under the 1 s read timeout": Attack(
        Trickle(chunk=1, interval=0.3, max_seconds=30),
        "did not complete within 3 s (HAL0_LEMONADE_HTTP_DEADLINE)",
        {TIMEOUT: "1", DEADLINE: "3"},
        kept=True,
    ),
    "trickles the response head a byte every 0.3 s": Attack(
        SlowHead(interval=0.3, max_seconds=30),
        "did not complete within 3 s (HAL0_LEMONADE_HTTP_DEADLINE)",
        {TIMEOUT: "1", DEADLINE: "3"},
    ),
    "answers 503 with a body trickled a byte every 0.3 s": Attack(
        SlowError(503, interval=0.3, max_seconds=30),
        "4 attempts in a row got no further than byte 0 (last: HTTP 503)",
        {TIMEOUT: "1"},
    ),
    "announces a petabyte and sends the archive, on every connection": Attack(
        LongBody(extra=0, announce=10**15),
        "announces 1000000000000000 bytes",
    ),
    "follows the archive with zeros, endlessly, without a Content-Length": Attack(
        LongBody(extra=64 << 20, fill=b"\0", no_length=True),
        f"sent more than {SMALL_CAP_BYTES} bytes",
        SMALL_CAPS,
        part_cap=SMALL_CAP_BYTES,
    ),
}


def _only_the_partial_download_changed(before: Snapshot, after: Snapshot) -> None:
    changed = {k for k in before.keys() | after.keys() if before.get(k) != after.get(k)}
    partial = {k for k in changed if k.endswith((".tar.gz.part", ".tar.gz.part.json"))}
    assert changed == partial, sorted(changed - partial)


def _live_version(root: Path) -> str:
    return (root / "opt/lemonade/.installed-version").read_text().splitlines()[0]


@pytest.mark.parametrize("name", list(ATTACKS))
def test_a_hostile_server_cannot_hang_or_swell_the_download(
    installed: tuple[Path, Served],
    served: Callable[..., Served],
    http_server: HTTPTestServer,
    tmp_path: Path,
    name: str,
) -> None:
    attack = ATTACKS[name]
    root, _ = installed
    new = served(NEW, padding_bytes=PADDING)
    http_server.set_fault(f"/dl/{new.release.name}", attack.fault)
    part = root / f"var/cache/hal0-lemonade/{new.release.sha256}.tar.gz.part"
    before = snapshot(root, dir_mtimes=False)

    with _PeakSize(part) as watched:
        run = _run_installer(install_args(root, new, "--no-start"), attack.env, tmp_path)

    assert run.code == 1, (run.out, run.err)
    assert run.seconds < CEILING, f"took {run.seconds:.1f} s"
    # However much the server sends, the cache's .part stays within the download cap.
    cap = attack.part_cap or new.release.path.stat().st_size
    assert watched.peak <= cap, f"the .part grew to {watched.peak} bytes"
    error = run.error
    assert attack.expect in error, error
    assert new.url in error and "\n" not in error
    assert "Traceback" not in run.err
    assert ("a re-run resumes at byte" in error) == attack.kept, error
    _only_the_partial_download_changed(before, snapshot(root, dir_mtimes=False))
    assert _live_version(root) == "10.6.0"


def test_a_redirect_with_a_huge_body_is_followed_without_reading_it(
    installed: tuple[Path, Served],
    served: Callable[..., Served],
    http_server: HTTPTestServer,
    tmp_path: Path,
) -> None:
    """urllib reads a redirect's whole body into memory before it follows it; 256 MB of it
    must not show up in the installer's peak RSS (~45 MB for a whole install)."""
    root, _ = installed
    new = served(NEW, padding_bytes=PADDING)
    hop = http_server.add("/hop", b"", Redirect(f"/dl/{new.release.name}", body_bytes=256 << 20))

    run = _run_installer(install_args(root, Served(new.release, hop), "--no-start"), {}, tmp_path)

    assert run.code == 0, (run.out, run.err)
    assert run.seconds < CEILING, f"took {run.seconds:.1f} s"
    assert run.max_rss_kib < 150 * 1024, f"peak RSS {run.max_rss_kib // 1024} MiB"
    assert _live_version(root) == NEW


def test_a_content_length_that_is_no_number_is_ignored(
    installed: tuple[Path, Served],
    served: Callable[..., Served],
    http_server: HTTPTestServer,
    tmp_path: Path,
) -> None:
    """int() refuses "²" although "²".isdigit() is true.  http.client treats such a length
    as absent, and so must the installer: the body then ends when the server closes."""
    root, _ = installed
    new = served(NEW, padding_bytes=PADDING)
    http_server.set_fault(f"/dl/{new.release.name}", LongBody(extra=0, announce="²"))

    run = _run_installer(install_args(root, new, "--no-start"), {}, tmp_path)

    assert run.code == 0, (run.out, run.err)
    assert _live_version(root) == NEW


@pytest.mark.parametrize(
    "url",
    [
        pytest.param(lambda: f"http://127.0.0.1:{free_port()}/x.tar.gz", id="refused"),
        pytest.param(lambda: "http://hal0-lemonade-test.invalid/x.tar.gz", id="no such host"),
    ],
)
def test_nothing_downloaded_means_no_resume_promised(
    cli: CLI, installed: tuple[Path, Served], served: Callable[..., Served], url: Callable[[], str]
) -> None:
    root, _ = installed
    new = served(NEW)
    before = snapshot(root, dir_mtimes=False)
    started = time.monotonic()
    run = cli(*install_args(root, Served(new.release, url()), "--no-start"))
    assert run.code == 1, run.out
    assert time.monotonic() - started < CEILING
    error = run.json["error"]
    assert "resume" not in error, error
    assert "4 attempts in a row got no further than byte 0" in error, error
    _only_the_partial_download_changed(before, snapshot(root, dir_mtimes=False))


@pytest.mark.parametrize("value", ["soon", "0", "-5", "nan", "inf", "86401", "1e9"])
def test_a_malformed_deadline_is_a_usage_error_before_any_work(
    cli: CLI, root: Path, served: Callable[..., Served], http_server: HTTPTestServer, value: str
) -> None:
    s = served()
    http_server.clear_requests()
    args = ["install", "--root", root, "--version", s.release.version, "--artifact", s.url]
    run = cli(*args, "--sha256", s.release.sha256, "--no-start", env={DEADLINE: value})
    assert run.code == 2, run.out
    assert f"HAL0_LEMONADE_HTTP_DEADLINE={value!r}" in run.err
    assert http_server.requests == []
    assert list(root.iterdir()) == []
