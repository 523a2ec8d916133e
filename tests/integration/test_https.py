"""HTTPS downloads from a self-signed loopback server.

The installer verifies TLS against the system trust store, which OpenSSL lets SSL_CERT_FILE
replace: trusted through it, the certificate is accepted; otherwise the install fails on the
certificate, fast, with nothing installed.  The CLI runs in-process, and a new TLS context is
made per connection, so the env the ``cli`` fixture sets is what the download verifies with.
The same holds through HTTPS_PROXY (a CONNECT tunnel): urllib reads the proxy variables when
each download builds its ProxyHandler, and TLS still runs end to end with the server.
"""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.integration.conftest import CLI, Served, install_args, wait_for_new_threads
from tests.support.archives import ReleaseFactory
from tests.support.httpserver import HTTPTestServer, ProxyServer, Redirect

TIMEOUT = "2"  # HAL0_LEMONADE_HTTP_TIMEOUT: a handshake on loopback takes milliseconds


@dataclass(frozen=True)
class Cert:
    cert: Path
    key: Path


def _self_signed(directory: Path) -> Cert:
    """A certificate for IP 127.0.0.1 (the SAN is what a client checks), signed by itself."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("the openssl CLI is needed to make a test certificate")
    directory.mkdir(parents=True)
    cert, key = directory / "cert.pem", directory / "key.pem"
    args = [
        openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
        "-keyout", str(key), "-out", str(cert),
    ]  # fmt: skip
    subprocess.run(args, check=True, capture_output=True)
    return Cert(cert, key)


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Cert, Cert]:
    """The server's certificate, and an impostor's: same name and IP, another key."""
    base = tmp_path_factory.mktemp("tls")
    return _self_signed(base / "server"), _self_signed(base / "impostor")


@pytest.fixture
def https_server(certs: tuple[Cert, Cert]) -> Iterator[HTTPTestServer]:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certs[0].cert, certs[0].key)
    with HTTPTestServer(tls=context) as server:
        yield server


@pytest.fixture
def served_https(
    https_server: HTTPTestServer, release_factory: ReleaseFactory
) -> Callable[[], Served]:
    def serve() -> Served:
        release = release_factory()
        return Served(release, https_server.add(f"/dl/{release.name}", release.path))

    return serve


pytestmark = pytest.mark.usefixtures("join_server_threads")


def _trust(bundle: Path, tmp_path: Path) -> dict[str, str]:
    """Env that makes ``bundle`` the whole trust store (the system's is left out), and keeps
    a developer's proxy settings away from 127.0.0.1."""
    empty_dir = tmp_path / "no-ca-dir"
    empty_dir.mkdir(exist_ok=True)
    return {
        "SSL_CERT_FILE": str(bundle),
        "SSL_CERT_DIR": str(empty_dir),
        "NO_PROXY": "127.0.0.1",
        "no_proxy": "127.0.0.1",
        "HAL0_LEMONADE_HTTP_TIMEOUT": TIMEOUT,
    }


def _via_proxy(bundle: Path, tmp_path: Path, proxy: ProxyServer) -> dict[str, str]:
    """``_trust`` plus HTTPS_PROXY at ``proxy``; NO_PROXY emptied so 127.0.0.1 goes through it.

    urllib reads both spellings (the lower-case one wins) when the download builds its
    ProxyHandler, so both are set: a developer's own value must not be the one used."""
    return {
        **_trust(bundle, tmp_path),
        "HTTPS_PROXY": proxy.base_url,
        "https_proxy": proxy.base_url,
        "NO_PROXY": "",
        "no_proxy": "",
    }


def _installed(root: Path, s: Served) -> None:
    marker = (root / "opt/lemonade/.installed-version").read_text()
    assert f"sha256={s.release.sha256}" in marker


def test_the_server_speaks_https(https_server: HTTPTestServer) -> None:
    assert https_server.base_url == f"https://127.0.0.1:{https_server.port}"


ROUTES = ["direct", "through an HTTPS_PROXY tunnel"]


def _env(route: str, bundle: Path, tmp_path: Path, proxy: ProxyServer) -> dict[str, str]:
    return _trust(bundle, tmp_path) if route == "direct" else _via_proxy(bundle, tmp_path, proxy)


@dataclass(frozen=True)
class Tls:
    """What every install test here uses: a root, the certificates, the https server (with
    ``serve`` to put a fresh release on it) and the proxy a route may go through."""

    root: Path
    tmp_path: Path
    certs: tuple[Cert, Cert]
    serve: Callable[[], Served]
    server: HTTPTestServer
    proxy: ProxyServer

    def env(self, route: str, bundle: Path) -> dict[str, str]:
        return _env(route, bundle, self.tmp_path, self.proxy)


@pytest.fixture
def tls(  # noqa: PLR0917 - the fixtures it bundles, so the tests need not list them all
    root: Path,
    tmp_path: Path,
    certs: tuple[Cert, Cert],
    served_https: Callable[[], Served],
    https_server: HTTPTestServer,
    proxy_server: ProxyServer,
) -> Tls:
    return Tls(root, tmp_path, certs, served_https, https_server, proxy_server)


def _tunnelled_once(route: str, proxy: ProxyServer, https_server: HTTPTestServer) -> None:
    """Through the proxy: one CONNECT to the https server (TLS runs end to end inside it), no
    proxied GET and no second tunnel (no retry). Direct: the proxy saw nothing."""
    expected = [] if route == "direct" else [("CONNECT", f"127.0.0.1:{https_server.port}")]
    assert [(r.method, r.target) for r in proxy.requests] == expected


@pytest.mark.parametrize("route", ROUTES)
def test_a_trusted_self_signed_certificate_installs(cli: CLI, tls: Tls, route: str) -> None:
    s = tls.serve()
    assert s.url.startswith("https://127.0.0.1:")

    run = cli(*install_args(tls.root, s, "--no-start"), env=tls.env(route, tls.certs[0].cert))

    assert run.code == 0, run.out
    _installed(tls.root, s)
    assert [r.method for r in tls.server.requests_for(f"/dl/{s.release.name}")] == ["GET"]
    _tunnelled_once(route, tls.proxy, tls.server)


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("trusted", ["nothing", "an impostor"])
def test_an_untrusted_certificate_is_refused_fast_with_nothing_installed(
    cli: CLI, tls: Tls, trusted: str, route: str
) -> None:
    s = tls.serve()
    root = tls.root
    bundle = tls.tmp_path / "empty.pem"
    bundle.write_bytes(b"")
    if trusted == "an impostor":
        bundle = tls.certs[1].cert

    started = time.monotonic()
    run = cli(*install_args(root, s, "--no-start"), env=tls.env(route, bundle))
    elapsed = time.monotonic() - started

    assert run.code == 1, run.out
    error = run.json["error"]
    assert "CERTIFICATE_VERIFY_FAILED" in error, error
    assert run.step("Lemonade release")["status"] == "failed"
    live = root / "opt/lemonade"
    assert not live.exists() and not live.is_symlink()
    releases = root / "opt/lemonade.releases"
    assert not releases.exists() or list(releases.iterdir()) == []
    # Not one request went over a connection the client had not verified.
    assert tls.server.requests == []
    _tunnelled_once(route, tls.proxy, tls.server)
    # Not retried like a network fault: the same certificate would fail the same way.
    assert "is not trusted" in error and "after 4 attempts" not in error, error
    assert "(hint: " in error and "SSL_CERT_FILE" in error, error
    assert elapsed < 2, f"took {elapsed:.1f} s"


def test_an_http_redirect_to_a_trusted_https_server_installs(
    cli: CLI, tls: Tls, http_server: HTTPTestServer
) -> None:
    s = tls.serve()
    start = http_server.add("/start.tar.gz", b"", Redirect(to=s.url))
    assert start.startswith("http://")

    run = cli(
        *install_args(tls.root, Served(s.release, start), "--no-start"),
        env=tls.env("direct", tls.certs[0].cert),
    )

    assert run.code == 0, run.out
    _installed(tls.root, s)
    assert [r.method for r in http_server.requests_for("/start.tar.gz")] == ["GET"]
    assert [r.method for r in tls.server.requests_for(f"/dl/{s.release.name}")] == ["GET"]


def test_a_refused_handshake_leaves_no_traceback_on_the_servers_stderr(
    https_server: HTTPTestServer, capsys: pytest.CaptureFixture[str]
) -> None:
    before = set(threading.enumerate())
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # trusts nothing
    with (
        socket.create_connection(("127.0.0.1", https_server.port), timeout=5) as sock,
        pytest.raises(ssl.SSLCertVerificationError),
    ):
        client.wrap_socket(sock, server_hostname="127.0.0.1")
    # The server sees the refusal on the connection's own thread: let it finish first.
    wait_for_new_threads(before, timeout=5)
    assert capsys.readouterr().err == ""
