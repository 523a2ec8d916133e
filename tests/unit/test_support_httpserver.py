"""The loopback file server serves, validates ranges, injects each fault as documented."""

from __future__ import annotations

import http.client
import socket
import struct
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.support.httpserver import (
    HTTPTestServer,
    LongBody,
    ProxyServer,
    Redirect,
    RedirectLoop,
    Reset,
    ShortBody,
    SlowError,
    SlowHead,
    Stall,
    Status,
    Trickle,
    WrongContent,
    free_port,
)

DATA = bytes(range(256)) * 40  # 10240 bytes, every offset distinguishable enough


def get(
    server: HTTPTestServer, path: str, headers: dict[str, str] | None = None, method: str = "GET"
) -> http.client.HTTPResponse:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    conn.request(method, path, headers=headers or {})
    return conn.getresponse()


def raw_get(server: HTTPTestServer, path: str) -> tuple[bytes, bytes]:
    """Read everything the server sends until it closes: (head, body)."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".encode())
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    return head, body


def test_normal_get_head_and_404(http_server: HTTPTestServer) -> None:
    url = http_server.add("/f.bin", DATA)
    assert url == f"http://127.0.0.1:{http_server.port}/f.bin"
    response = get(http_server, "/f.bin")
    assert response.status == 200
    assert response.read() == DATA
    assert response.getheader("Content-Length") == str(len(DATA))
    etag = response.getheader("ETag")
    assert etag is not None
    assert etag.startswith('"')
    assert response.getheader("Last-Modified") == "Sat, 01 Mar 2025 00:00:00 GMT"
    head = get(http_server, "/f.bin", method="HEAD")
    assert (head.status, head.read(), head.getheader("ETag")) == (200, b"", etag)
    assert get(http_server, "/missing").status == 404
    assert [(r.method, r.path) for r in http_server.requests] == [
        ("GET", "/f.bin"),
        ("HEAD", "/f.bin"),
        ("GET", "/missing"),
    ]


def test_ranges(http_server: HTTPTestServer, tmp_path: Path) -> None:
    source = tmp_path / "data.bin"
    source.write_bytes(DATA)
    http_server.add("/f.bin", source)
    response = get(http_server, "/f.bin", {"Range": "bytes=1000-"})
    assert response.status == 206
    assert response.getheader("Content-Range") == f"bytes 1000-{len(DATA) - 1}/{len(DATA)}"
    assert response.read() == DATA[1000:]
    assert get(http_server, "/f.bin", {"Range": "bytes=10-19"}).read() == DATA[10:20]
    assert get(http_server, "/f.bin", {"Range": "bytes=-5"}).read() == DATA[-5:]
    unsatisfiable = get(http_server, "/f.bin", {"Range": f"bytes={len(DATA)}-"})
    assert unsatisfiable.status == 416
    assert unsatisfiable.getheader("Content-Range") == f"bytes */{len(DATA)}"
    assert http_server.requests[0].range == "bytes=1000-"


def test_if_range(http_server: HTTPTestServer) -> None:
    http_server.add("/f.bin", DATA, etag='"v1"')
    matching = get(http_server, "/f.bin", {"Range": "bytes=100-", "If-Range": '"v1"'})
    assert (matching.status, matching.read()) == (206, DATA[100:])
    stale = get(http_server, "/f.bin", {"Range": "bytes=100-", "If-Range": '"v0"'})
    assert (stale.status, stale.read()) == (200, DATA)
    by_date = get(
        http_server, "/f.bin", {"Range": "bytes=100-", "If-Range": "Sat, 01 Mar 2025 00:00:00 GMT"}
    )
    assert by_date.status == 206


@pytest.mark.parametrize("code", [404, 500, 503])
def test_status_fault_for_first_k_requests(http_server: HTTPTestServer, code: int) -> None:
    http_server.add("/f.bin", DATA, Status(code, times=2))
    assert [get(http_server, "/f.bin").status for _ in range(3)] == [code, code, 200]


def test_reset_after_bytes(http_server: HTTPTestServer) -> None:
    http_server.add("/f.bin", DATA, Reset(after_bytes=100, times=1))
    response = get(http_server, "/f.bin")
    assert response.status == 200
    with pytest.raises((ConnectionResetError, http.client.IncompleteRead)):
        response.read()
    assert get(http_server, "/f.bin").read() == DATA


def test_short_body(http_server: HTTPTestServer) -> None:
    http_server.add("/f.bin", DATA, ShortBody(sent_bytes=100))
    response = get(http_server, "/f.bin")
    assert response.getheader("Content-Length") == str(len(DATA))
    with pytest.raises(http.client.IncompleteRead) as caught:
        response.read()
    assert caught.value.partial == DATA[:100]


def test_long_body(http_server: HTTPTestServer) -> None:
    http_server.add("/f.bin", DATA, LongBody(extra=10))
    head, body = raw_get(http_server, "/f.bin")
    assert f"Content-Length: {len(DATA)}".encode() in head
    assert body[: len(DATA)] == DATA
    assert len(body) == len(DATA) + 10
    http_server.set_fault("/f.bin", LongBody(extra=0, announce=50))
    assert get(http_server, "/f.bin").read() == DATA[:50]


def test_stall_times_out_client_and_stop_is_prompt() -> None:
    server = HTTPTestServer().start()
    server.add("/f.bin", DATA, Stall(seconds=30))
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=0.3)
    conn.request("GET", "/f.bin")
    response = conn.getresponse()
    assert response.status == 200
    with pytest.raises(TimeoutError):
        response.read()
    began = time.monotonic()
    server.stop()
    assert time.monotonic() - began < 2


def test_long_body_without_a_length_ends_at_the_close(http_server: HTTPTestServer) -> None:
    http_server.add("/f.bin", DATA, LongBody(extra=200_000, fill=b"\0", no_length=True))
    head, body = raw_get(http_server, "/f.bin")
    assert b"content-length" not in head.lower()
    assert body == DATA + bytes(200_000)
    http_server.set_fault("/f.bin", LongBody(extra=0, announce="²"))
    head, body = raw_get(http_server, "/f.bin")
    assert "Content-Length: ²".encode("latin-1") in head
    assert body == DATA


def test_stall_after_bytes_ignores_the_range(http_server: HTTPTestServer) -> None:
    http_server.add("/f.bin", DATA, Stall(seconds=30, after_bytes=1000))
    conn = http.client.HTTPConnection("127.0.0.1", http_server.port, timeout=0.3)
    conn.request("GET", "/f.bin", headers={"Range": "bytes=5000-"})
    response = conn.getresponse()
    assert response.status == 200  # the whole body from byte 0, not the range asked for
    assert response.read(1000) == DATA[:1000]
    with pytest.raises(TimeoutError):
        response.read(1)
    conn.close()


def test_slow_head_never_ends_the_headers(http_server: HTTPTestServer) -> None:
    http_server.add("/f.bin", DATA, SlowHead(interval=0.05, max_seconds=0.4))
    began = time.monotonic()
    head, body = raw_get(http_server, "/f.bin")
    assert time.monotonic() - began >= 0.3
    assert head.startswith(b"HTTP/1.1 200 OK\r\nX-Slow: aa")
    assert body == b""  # no blank line: the head never ended


def test_slow_error_trickles_its_body(http_server: HTTPTestServer) -> None:
    http_server.add("/f.bin", DATA, SlowError(503, interval=0.05, max_seconds=0.3))
    response = get(http_server, "/f.bin")
    assert (response.status, response.getheader("Content-Length")) == (503, str(1 << 20))
    with pytest.raises(http.client.IncompleteRead) as caught:
        response.read()
    assert 2 <= len(caught.value.partial) < 20


def test_redirect_with_a_big_body(http_server: HTTPTestServer) -> None:
    http_server.add("/real.bin", DATA)
    http_server.add("/f.bin", DATA, Redirect("/real.bin", body_bytes=3_000_000))
    response = get(http_server, "/f.bin")
    assert response.status == 302
    assert response.getheader("Location") == http_server.url("/real.bin")
    assert response.read() == bytes(3_000_000)


def test_redirect(http_server: HTTPTestServer) -> None:
    http_server.add("/real.bin", DATA)
    http_server.add("/f.bin", DATA, Redirect("/real.bin", code=301, times=1))
    with urllib.request.urlopen(http_server.url("/f.bin"), timeout=5) as response:
        assert response.read() == DATA
    assert [r.path for r in http_server.requests] == ["/f.bin", "/real.bin"]
    assert get(http_server, "/f.bin").status == 200


def test_redirect_loop(http_server: HTTPTestServer) -> None:
    http_server.add("/f.bin", DATA, RedirectLoop())
    response = get(http_server, "/f.bin")
    assert response.status == 302
    assert response.getheader("Location") == http_server.url("/f.bin")
    with pytest.raises(urllib.error.HTTPError):
        urllib.request.urlopen(http_server.url("/f.bin"), timeout=5)


def test_trickle(http_server: HTTPTestServer) -> None:
    http_server.add("/small.bin", DATA[:100], Trickle(chunk=20, interval=0.05))
    began = time.monotonic()
    assert get(http_server, "/small.bin").read() == DATA[:100]
    assert time.monotonic() - began >= 0.2
    http_server.add("/big.bin", DATA, Trickle(chunk=10, interval=0.05, max_seconds=0.3))
    with pytest.raises(http.client.IncompleteRead) as caught:
        get(http_server, "/big.bin").read()
    assert 0 < len(caught.value.partial) < 200


def test_wrong_content(http_server: HTTPTestServer) -> None:
    http_server.add("/f.bin", DATA, WrongContent(times=1))
    wrong = get(http_server, "/f.bin").read()
    assert len(wrong) == len(DATA)
    assert wrong != DATA
    assert get(http_server, "/f.bin").read() == DATA
    http_server.set_fault("/f.bin", WrongContent(b"other"))
    assert get(http_server, "/f.bin").read() == b"other"


def test_proxy_forwards_and_records(
    http_server: HTTPTestServer, proxy_server: ProxyServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    http_server.add("/f.bin", DATA)
    monkeypatch.setenv("HTTP_PROXY", proxy_server.base_url)
    monkeypatch.setenv("http_proxy", proxy_server.base_url)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    opener = urllib.request.build_opener()  # picks the proxy up from the environment
    with opener.open(http_server.url("/f.bin"), timeout=5) as response:
        assert response.read() == DATA
    assert [r.target for r in proxy_server.requests] == [http_server.url("/f.bin")]
    assert [r.path for r in http_server.requests] == ["/f.bin"]
    http_server.add("/gone", b"", Status(404))
    with pytest.raises(urllib.error.HTTPError) as caught:
        opener.open(http_server.url("/gone"), timeout=5)
    assert caught.value.code == 404


def _connect(proxy: ProxyServer, target: str) -> tuple[socket.socket, bytes]:
    """Open a raw CONNECT tunnel; return the socket and the proxy's answer head."""
    sock = socket.create_connection(("127.0.0.1", proxy.port), timeout=5)
    sock.sendall(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode())
    head = b""
    while b"\r\n\r\n" not in head and (chunk := sock.recv(1)):
        head += chunk  # byte by byte: nothing past the head may be consumed here
    return sock, head


def _settle(before: set[threading.Thread], timeout: float = 5.0) -> float:
    """Wait for every thread started since ``before`` to end; return the seconds it took.

    Polled rather than joined: a handler thread may still be starting (join would raise)."""
    began = time.monotonic()
    new: list[threading.Thread] = []
    while time.monotonic() - began < timeout:
        new = [t for t in set(threading.enumerate()) - before if t.ident is None or t.is_alive()]
        if not new:
            return time.monotonic() - began
        time.sleep(0.01)
    raise AssertionError(f"threads still running after {timeout} s: {new}")


def test_proxy_connect_relays_a_tunnel(
    http_server: HTTPTestServer, proxy_server: ProxyServer
) -> None:
    http_server.add("/f.bin", DATA)
    conn = http.client.HTTPConnection("127.0.0.1", proxy_server.port, timeout=5)
    conn.set_tunnel("127.0.0.1", http_server.port)
    try:
        # Two requests over one tunnel: the relay keeps going until a side closes.
        for _ in range(2):
            conn.request("GET", "/f.bin")
            assert conn.getresponse().read() == DATA
    finally:
        conn.close()
    target = f"127.0.0.1:{http_server.port}"
    assert [(r.method, r.target, r.path) for r in proxy_server.requests] == [
        ("CONNECT", target, target)
    ]
    assert [(r.method, r.target) for r in http_server.requests] == [("GET", "/f.bin")] * 2


def test_proxy_connect_answers_200_and_relays_raw_bytes(
    http_server: HTTPTestServer, proxy_server: ProxyServer
) -> None:
    http_server.add("/f.bin", DATA)
    sock, head = _connect(proxy_server, f"127.0.0.1:{http_server.port}")
    with sock:
        assert head == b"HTTP/1.1 200 Connection established\r\n\r\n"
        sock.sendall(b"GET /f.bin HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        received = b""
        while chunk := sock.recv(65536):  # ends when the server closes, through the tunnel
            received += chunk
    assert received.partition(b"\r\n\r\n")[2] == DATA


def test_proxy_connect_to_a_closed_port_is_502(proxy_server: ProxyServer) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", proxy_server.port, timeout=5)
    conn.request("CONNECT", f"127.0.0.1:{free_port()}")
    assert conn.getresponse().status == 502
    conn.close()
    conn = http.client.HTTPConnection("127.0.0.1", proxy_server.port, timeout=5)
    conn.request("CONNECT", "no-port")
    assert conn.getresponse().status == 400
    conn.close()
    assert [r.method for r in proxy_server.requests] == ["CONNECT", "CONNECT"]


def test_a_client_dropping_mid_tunnel_leaves_no_traceback(
    http_server: HTTPTestServer, proxy_server: ProxyServer, capsys: pytest.CaptureFixture[str]
) -> None:
    http_server.add("/f.bin", DATA)
    before = set(threading.enumerate())
    sock, head = _connect(proxy_server, f"127.0.0.1:{http_server.port}")
    assert head.startswith(b"HTTP/1.1 200 ")
    sock.sendall(b"GET /f.bin HTTP/1.1\r\n")  # half a request, then a reset
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()
    assert _settle(before) < 2  # the relay and the upstream handler both ended
    assert capsys.readouterr().err == ""


def test_stop_is_prompt_with_an_idle_tunnel_open(http_server: HTTPTestServer) -> None:
    proxy = ProxyServer().start()
    before = set(threading.enumerate())
    sock, head = _connect(proxy, f"127.0.0.1:{http_server.port}")
    with sock:
        assert head.startswith(b"HTTP/1.1 200 ")
        began = time.monotonic()
        proxy.stop()
        assert time.monotonic() - began + _settle(before) < 2
        assert sock.recv(1) == b""  # the proxy closed its end of the tunnel
