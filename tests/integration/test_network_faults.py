"""Network faults served from 127.0.0.1, each with its expected outcome.

The table drives a real ``hal0-lemonade install`` into an empty root: either the release ends
up installed (retried, resumed, redirected, proxied) or the run fails with one clear line,
exit 1, and nothing of the release is live.  HAL0_LEMONADE_HTTP_TIMEOUT keeps stalls short.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.integration.conftest import CLI, Served, install_args
from tests.support.httpserver import (
    HTTPTestServer,
    LongBody,
    ProxyServer,
    Redirect,
    RedirectLoop,
    RequestRecord,
    Reset,
    ShortBody,
    Stall,
    Status,
    Trickle,
    WrongContent,
    free_port,
)

PADDING = 600_000  # incompressible bytes, so "mid-body" is well inside the download
TIMEOUT = "0.4"  # HAL0_LEMONADE_HTTP_TIMEOUT for every case (seconds)


pytestmark = pytest.mark.usefixtures("join_server_threads")


@dataclass(frozen=True)
class Net:
    """What a case gets to set up: the server, the proxy, the served URL and its size."""

    server: HTTPTestServer
    proxy: ProxyServer
    path: str
    size: int


@dataclass(frozen=True)
class Fault:
    setup: Callable[[Net], dict[str, str]]  # installs the fault; returns extra env
    ok: bool  # installed in the end?
    expect: str = ""  # a fragment of the error (failures) or of the request log check
    check: Callable[[list[RequestRecord], Net], None] | None = None
    max_seconds: float = 15.0
    artifact: Callable[[Net, str], str] | None = None  # replaces the URL (unreachable hosts)
    env: dict[str, str] = field(default_factory=dict)


def _fault(fault: object) -> Callable[[Net], dict[str, str]]:
    def setup(net: Net) -> dict[str, str]:
        net.server.set_fault(net.path, fault)  # type: ignore[arg-type]
        return {}

    return setup


def _sized(make: Callable[[int], object]) -> Callable[[Net], dict[str, str]]:
    def setup(net: Net) -> dict[str, str]:
        net.server.set_fault(net.path, make(net.size))  # type: ignore[arg-type]
        return {}

    return setup


def _gets(n: int) -> Callable[[list[RequestRecord], Net], None]:
    def check(requests: list[RequestRecord], net: Net) -> None:
        assert len([r for r in requests if r.method == "GET"]) == n, requests

    return check


def _resumed(requests: list[RequestRecord], net: Net) -> None:
    gets = [r for r in requests if r.method == "GET"]
    assert len(gets) == 2, gets
    assert gets[0].range is None
    assert gets[1].range is not None and gets[1].range.startswith("bytes=")
    assert int(gets[1].range.removeprefix("bytes=").rstrip("-")) > 0, "resumed at byte > 0"
    assert gets[1].headers.get("if-range"), "the resume is conditional on the same file"


def _via_proxy(net: Net) -> dict[str, str]:
    url = net.proxy.base_url
    return {"HTTP_PROXY": url, "http_proxy": url, "NO_PROXY": "", "no_proxy": ""}


def _proxied(requests: list[RequestRecord], net: Net) -> None:
    seen = net.proxy.requests
    assert [r.target for r in seen] == [net.server.url(net.path)], seen
    assert len(requests) == 1


def _dead_proxy_bypassed(net: Net) -> dict[str, str]:
    dead = f"http://127.0.0.1:{free_port()}"
    return {
        "HTTP_PROXY": dead,
        "http_proxy": dead,
        "NO_PROXY": "127.0.0.1",
        "no_proxy": "127.0.0.1",
    }


def _dead_proxy(net: Net) -> dict[str, str]:
    dead = f"http://127.0.0.1:{free_port()}"
    return {"HTTP_PROXY": dead, "http_proxy": dead, "NO_PROXY": "", "no_proxy": ""}


FAULTS: dict[str, Fault] = {
    "404": Fault(_fault(Status(404)), ok=False, expect="HTTP 404 fetching"),
    "500 then success": Fault(_fault(Status(500, times=1)), ok=True, check=_gets(2)),
    "503 every time": Fault(
        _fault(Status(503)),
        ok=False,
        expect="4 attempts in a row got no further than byte 0 (last: HTTP 503)",
        check=_gets(4),
    ),
    "429 then success": Fault(_fault(Status(429, times=1)), ok=True, check=_gets(2)),
    "reset mid-body, then resume": Fault(
        _sized(lambda size: Reset(after_bytes=size // 2, times=1)), ok=True, check=_resumed
    ),
    "reset before any byte, every time": Fault(
        _fault(Reset(after_bytes=0)), ok=False, expect="got no further than byte 0"
    ),
    "stall, every time (bounded)": Fault(
        _fault(Stall(seconds=30)), ok=False, expect="no data for 0.4 s (stalled)", max_seconds=8
    ),
    "stall once, then resume": Fault(_fault(Stall(seconds=30, times=1)), ok=True, check=_gets(2)),
    "short body, then resume": Fault(
        _sized(lambda size: ShortBody(sent_bytes=size // 3, times=1)), ok=True, check=_resumed
    ),
    "longer body than announced": Fault(_fault(LongBody(extra=4096)), ok=True, check=_gets(1)),
    "body cut at a lying Content-Length": Fault(
        _sized(lambda size: LongBody(extra=0, announce=size - 1000)),
        ok=False,
        expect="SHA-256 mismatch",
    ),
    "redirect": Fault(_fault(Redirect("/elsewhere.tar.gz")), ok=True),
    "redirect loop": Fault(_fault(RedirectLoop()), ok=False, expect="too many redirects"),
    # A server must not be able to point the download at a local file or another scheme.
    "redirect to file://": Fault(
        _fault(Redirect("file:///etc/passwd")), ok=False, expect="refusing a redirect"
    ),
    "redirect to ftp://": Fault(
        _fault(Redirect("ftp://127.0.0.1/x.tar.gz")), ok=False, expect="refusing a redirect"
    ),
    "wrong content (digest)": Fault(_fault(WrongContent()), ok=False, expect="SHA-256 mismatch"),
    "slow trickle": Fault(
        _fault(Trickle(chunk=32 * 1024, interval=0.01, max_seconds=20)), ok=True, check=_gets(1)
    ),
    "through HTTP_PROXY": Fault(_via_proxy, ok=True, check=_proxied),
    "NO_PROXY bypasses a dead proxy": Fault(_dead_proxy_bypassed, ok=True, check=_gets(1)),
    "dead proxy": Fault(_dead_proxy, ok=False, expect="could not fetch"),
    "connection refused": Fault(
        lambda net: {},
        ok=False,
        expect="Connection refused",
        artifact=lambda net, url: f"http://127.0.0.1:{free_port()}/x.tar.gz",
    ),
}


def test_the_fault_table_is_big_enough() -> None:
    assert len(FAULTS) >= 10
    assert {f.ok for f in FAULTS.values()} == {True, False}


@pytest.mark.parametrize("name", list(FAULTS))
def test_network_fault(  # noqa: PLR0917 - pytest fixtures
    cli: CLI,
    root: Path,
    served: Callable[..., Served],
    http_server: HTTPTestServer,
    proxy_server: ProxyServer,
    name: str,
) -> None:
    fault = FAULTS[name]
    s = served(padding_bytes=PADDING)
    path = f"/dl/{s.release.name}"
    http_server.add("/elsewhere.tar.gz", s.release.path)
    net = Net(http_server, proxy_server, path, s.release.path.stat().st_size)
    env = {"HAL0_LEMONADE_HTTP_TIMEOUT": TIMEOUT, **fault.setup(net)}
    url = fault.artifact(net, s.url) if fault.artifact else s.url
    args = install_args(root, Served(s.release, url), "--no-start")

    started = time.monotonic()
    run = cli(*args, env=env)
    elapsed = time.monotonic() - started

    assert elapsed < fault.max_seconds, f"took {elapsed:.1f} s"
    assert "hal0_lemonade/" not in run.err  # (the loopback server may log its own)
    live = root / "opt/lemonade"
    if fault.ok:
        assert run.code == 0, run.out
        marker = (live / ".installed-version").read_text()
        assert f"sha256={s.release.sha256}" in marker
    else:
        assert run.code == 1, run.out
        error = run.json["error"]
        assert fault.expect in error, error
        assert run.step("Lemonade release")["status"] == "failed"
        assert not live.exists() and not live.is_symlink()
        releases = root / "opt/lemonade.releases"
        assert not releases.exists() or list(releases.iterdir()) == []
    if fault.check is not None:
        fault.check(http_server.requests_for(path), net)


# -- resuming across runs, and the download cache --------------------------------------------


def _seed_part(root: Path, s: Served, data: bytes, validator: str) -> Path:
    cache = root / "var/cache/hal0-lemonade"
    cache.mkdir(parents=True)
    part = cache / f"{s.release.sha256}.tar.gz.part"
    part.write_bytes(data)
    meta = {"url": s.url, "validator": validator}
    (cache / f"{s.release.sha256}.tar.gz.part.json").write_text(json.dumps(meta))
    return part


def _etag(s: Served) -> str:
    import urllib.request

    with urllib.request.urlopen(urllib.request.Request(s.url, method="HEAD")) as resp:
        return str(resp.headers["ETag"])


@pytest.mark.parametrize(
    ("kept", "validator"),
    [
        ("half", "etag"),  # a partial download of a killed run: resumed
        ("all", "etag"),  # a complete one, killed before its rename: 416, no re-download
        ("half", '"stale"'),  # the file changed since: If-Range fails, start over
        ("junk", "etag"),  # more bytes than the file: 416, start over
    ],
)
def test_a_kept_partial_download_is_resumed_or_restarted_correctly(  # noqa: PLR0917
    cli: CLI,
    root: Path,
    served: Callable[..., Served],
    http_server: HTTPTestServer,
    kept: str,
    validator: str,
) -> None:
    s = served(padding_bytes=PADDING)
    data = s.release.path.read_bytes()
    seed = {"half": data[: len(data) // 2], "all": data, "junk": data + b"x" * 100}[kept]
    _seed_part(root, s, seed, _etag(s) if validator == "etag" else validator)
    http_server.clear_requests()

    run = cli(*install_args(root, s, "--no-start"))

    assert run.code == 0, run.out
    gets = [r for r in http_server.requests_for(f"/dl/{s.release.name}") if r.method == "GET"]
    assert gets[0].range == f"bytes={len(seed)}-"
    cache = root / "var/cache/hal0-lemonade"
    assert sorted(p.name for p in cache.iterdir()) == [f"{s.release.sha256}.tar.gz"]
    assert (cache / f"{s.release.sha256}.tar.gz").read_bytes() == data


def test_a_cache_hit_needs_no_network_and_a_corrupt_one_is_fetched_again(
    cli: CLI, root: Path, served: Callable[..., Served], http_server: HTTPTestServer
) -> None:
    s = served()
    assert cli(*install_args(root, s, "--no-start")).code == 0
    cached = root / f"var/cache/hal0-lemonade/{s.release.sha256}.tar.gz"
    assert cached.read_bytes() == s.release.path.read_bytes()
    live_lemonade = root / "opt/lemonade/lemonade"

    # Damage the live tree, take the server away: the repair comes from the cache.
    live_lemonade.unlink()
    http_server.set_fault(f"/dl/{s.release.name}", Status(404))
    http_server.clear_requests()
    run = cli(*install_args(root, s, "--no-start"))
    assert run.code == 0, run.out
    assert "from the download cache" in run.step("Lemonade release")["detail"]
    assert http_server.requests == []
    assert live_lemonade.is_file()

    # A cache entry that no longer matches the pin is verified again, dropped and re-fetched.
    raw = bytearray(cached.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    cached.write_bytes(bytes(raw))
    live_lemonade.unlink()
    http_server.set_fault(f"/dl/{s.release.name}", None)
    run = cli(*install_args(root, s, "--no-start"))
    assert run.code == 0, run.out
    assert "downloaded" in run.step("Lemonade release")["detail"]
    assert len(http_server.requests) == 1
    assert cached.read_bytes() == s.release.path.read_bytes()


def test_a_full_stall_fails_in_bounded_time_with_the_default_attempts(
    cli: CLI, root: Path, served: Callable[..., Served], http_server: HTTPTestServer
) -> None:
    """The bound is about attempts x timeout: 4 tries at 0.3 s stay well under 5 s."""
    s = served()
    http_server.set_fault(f"/dl/{s.release.name}", Stall(seconds=30))
    started = time.monotonic()
    run = cli(*install_args(root, s, "--no-start"), env={"HAL0_LEMONADE_HTTP_TIMEOUT": "0.3"})
    assert run.code == 1
    assert time.monotonic() - started < 5
    assert "stalled" in run.json["error"]
    assert "HAL0_LEMONADE_HTTP_TIMEOUT" in run.json["error"]
