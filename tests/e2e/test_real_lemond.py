"""The real lemond 10.6.0 and 11.7.0 under real systemd: install, sandbox, drain, restart, repair.

The archive is a real Lemonade release (``$HAL0_REAL_LEMONADE``, bound at /real), installed
with ``--artifact``/``--sha256`` exactly as an operator installs a mirrored file.  One booted
container, scenarios in file order, each leaving the service running for the next.  Where
the stand-in and the real daemon could differ (the drain, the log, the WebSocket port, a
corrupted config, a busy port), these are the tests that decide.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator

import pytest

from tests.e2e.conftest import E2E, MEASURED, RealRelease
from tests.e2e.expect import assert_result_shape, require_active
from tests.e2e.harness import CONFIG, MARKER, STATE_DIR, UNIT, Container

pytestmark = pytest.mark.e2e

VERSION = "10.6.0"
RUNTIME_DIR = "/run/hal0-lemonade"
HEALTH = "http://127.0.0.1:13305/api/v1/health"


@pytest.fixture(scope="module")
def real(e2e: E2E) -> RealRelease:
    return e2e.real_release(VERSION)


@pytest.fixture(scope="module")
def container(e2e: E2E, real: RealRelease) -> Iterator[Container]:
    with e2e.boot() as booted:
        yield booted


@pytest.fixture
def running(container: Container, real: RealRelease) -> int:
    """The service runs the real release (installed first when a scenario runs alone)."""
    if container.show("LoadState") == "not-found":
        container.install(*real.args())
    return require_active(container)


def _listeners(c: Container, proto: str = "t") -> list[tuple[str, int]]:
    """(local address:port, pid) of every listening socket, from ``ss``."""
    out = c.out(["ss", f"-Hl{proto}np"])
    found = []
    for line in out.splitlines():
        fields = line.split()
        pid = re.search(r"pid=(\d+)", line)
        if pid and len(fields) >= 4:
            found.append((fields[3], int(pid.group(1))))
    return found


def _checks(c: Container, command: str, expect_rc: int) -> dict[str, dict[str, object]]:
    done = c.cli(command, "--json", timeout=60)
    assert done.returncode == expect_rc, done.stdout + done.stderr
    return {check["name"]: check for check in json.loads(done.stdout)["checks"]}


def _journal_since(c: Container, cursor: str) -> str:
    return c.out(["journalctl", "--no-pager", "-u", UNIT, "--after-cursor", cursor, "-o", "cat"])


def _cursor(c: Container) -> str:
    out = c.out(["journalctl", "--no-pager", "-n", "0", "--show-cursor", "-u", UNIT])
    return out.rsplit("-- cursor: ", 1)[-1].strip()


def test_install_runs_the_real_daemon(container: Container, real: RealRelease) -> None:
    result = container.install(*real.args())
    assert_result_shape(result)
    assert result["ok"] is True and result["changed"] is True, result
    pid = require_active(container)
    health = container.wait_healthy()
    assert health["version"] == VERSION and health["status"] == "ok", health
    assert container.read(MARKER).splitlines()[0] == VERSION
    assert container.out(["/opt/lemonade/lemond", "--version"]) == f"lemond version {VERSION}"
    assert ("127.0.0.1:13305", pid) in _listeners(container)  # lemond itself, on loopback

    status = _checks(container, "status", 0)
    assert all(c["ok"] is True for c in status.values()), status
    assert status["healthy"]["detail"] == (
        f"/api/v1/health answers (lemond {VERSION}, WebSocket on port 9000)"
    )
    doctor = _checks(container, "doctor", 0)
    assert doctor["version"]["ok"] is True
    assert doctor["version"]["detail"] == f"lemond {VERSION} runs, as installed"
    assert doctor["port"] == {**doctor["port"], "ok": True}
    assert f"held by lemond (pid {pid})" in str(doctor["port"]["detail"])
    assert doctor["healthy"]["ok"] is True


def test_the_daemon_works_inside_every_sandbox_directive(
    container: Container, running: int, e2e: E2E
) -> None:
    # Its log: the journal (lemond sees JOURNAL_STREAM and writes no file of its own).
    journal = container.journal(lines=200)
    assert f"Version: {VERSION}" in journal and "IPv4 HTTP server listening on 127.0.0.1:13305" in (
        journal
    ), journal
    # Its runtime dir: the unit's own, hal0's, where both env variables point.
    assert container.out(["stat", "-c", "%U %a", RUNTIME_DIR]) == "hal0 750"
    environ = container.read(f"/proc/{running}/environ").split("\0")
    assert {f"RUNTIME_DIRECTORY={RUNTIME_DIR}", f"XDG_RUNTIME_DIR={RUNTIME_DIR}"} <= set(environ)
    # Its WebSocket listener: the first free port from 9000, on the configured host.
    websocket = container.health()["websocket_port"]
    assert (f"127.0.0.1:{websocket}", running) in _listeners(container)
    own = [addr for addr, pid in _listeners(container) if pid == running]
    assert own and all(addr.startswith("127.0.0.1:") for addr in own), own
    # Its bin/ in the cache dir (ReadWritePaths=), owned by hal0.
    assert container.out(["stat", "-c", "%U %F", f"{STATE_DIR}/bin"]) == "hal0 directory"
    # No UDP broadcast socket: no_broadcast holds.
    assert [pid for _, pid in _listeners(container, "u") if pid == running] == []
    score = container.out(
        ["sh", "-c", f"systemd-analyze security {UNIT}.service --no-pager | tail -1"]
    )
    MEASURED[f"exposure, real lemond {VERSION} running (systemd {e2e.suite.systemd})"] = score
    level = re.search(r"exposure level for \S+: (\d+\.\d+)", score)
    assert level is not None and float(level.group(1)) <= 3.5, score


def test_a_rerun_changes_nothing_and_keeps_the_daemon(
    container: Container, real: RealRelease, running: int
) -> None:
    result = container.install(*real.args())
    assert result["changed"] is False, result
    assert container.main_pid() == running


def test_a_config_change_is_applied_by_a_restart(
    container: Container, real: RealRelease, running: int
) -> None:
    started = time.monotonic()
    result = container.install(*real.args(), "--threads", "3")
    MEASURED["install of a restarting change, real lemond (s)"] = (
        f"{time.monotonic() - started:.2f}"
    )
    assert result["changed"] is True
    assert container.read_json(CONFIG)["llamacpp"]["args"] == "--parallel 1 --threads 3"
    assert container.main_pid() != running
    assert container.wait_healthy()["version"] == VERSION


def test_stop_drains_cleanly_without_sigterm(container: Container, running: int) -> None:
    cursor = _cursor(container)
    started = time.monotonic()
    container.systemctl("stop", UNIT)
    took = time.monotonic() - started
    journal = _journal_since(container, cursor)
    assert "Cleanup complete" in journal, journal  # lemond's own drain ran to the end
    assert '"status":"shutting down"' in journal, journal  # the drain request was accepted
    assert "Bad request" not in journal and "SIGTERM" not in journal, journal
    assert container.show("Result") == "success"
    assert took < 5, f"stop took {took:.1f} s"
    MEASURED["systemctl stop, real lemond (s)"] = f"{took:.2f}"
    container.systemctl("start", UNIT)
    container.wait_healthy()


def test_a_killed_daemon_is_restarted(container: Container, running: int) -> None:
    container.run(["kill", "-9", str(running)])
    container.wait_for(
        "systemd to restart lemond",
        lambda: container.show("ActiveState") == "active" and container.main_pid() != running,
        timeout=30,
    )
    assert container.wait_healthy()["version"] == VERSION


def test_a_corrupted_config_is_repaired_by_the_next_install(
    container: Container, real: RealRelease, running: int
) -> None:
    container.run(["runuser", "-u", "hal0", "--", "sh", "-c", f"echo '{{not json' > {CONFIG}"])
    container.systemctl("restart", UNIT)
    container.wait_healthy()  # lemond starts on its defaults, on port 13305
    assert container.exists(f"{CONFIG}.corrupted")
    status = _checks(container, "status", 1)
    assert status["config"]["ok"] is False, status

    result = container.install(*real.args(), "--threads", "3")
    assert result["ok"] is True and result["changed"] is True, result
    config = container.read_json(CONFIG)
    assert config["host"] == "127.0.0.1" and config["no_broadcast"] is True
    container.wait_healthy()
    assert all(c["ok"] is True for c in _checks(container, "status", 0).values())


def test_a_busy_port_is_detected_although_lemond_keeps_running(
    container: Container, real: RealRelease, running: int
) -> None:
    """lemond logs a bind failure and stays up; the installer and status must notice."""
    container.systemctl("stop", UNIT)
    # It answers health like lemond would; HTTP/1.1 with a length, so that clients close
    # first (a server closing first leaves TIME_WAIT on the port, which keeps lemond's own
    # SO_REUSEPORT bind out for a minute after the squatter is gone).
    squatter = (
        "import http.server, json\n"
        "class H(http.server.BaseHTTPRequestHandler):\n"
        "    protocol_version = 'HTTP/1.1'\n"
        "    def do_GET(self):\n"
        "        body = json.dumps({'status': 'ok', 'version': '10.6.0'}).encode()\n"
        "        self.send_response(200)\n"
        "        self.send_header('Content-Length', str(len(body)))\n"
        "        self.end_headers(); self.wfile.write(body)\n"
        "http.server.HTTPServer(('127.0.0.1', 13305), H).serve_forever()\n"
    )
    container.run(["systemd-run", "--unit=squatter", "--uid=nobody", "python3", "-c", squatter])
    try:
        container.wait_for("the squatter", lambda: container.run(
            ["curl", "-fsS", HEALTH], check=False).returncode == 0)  # fmt: skip
    except AssertionError as exc:
        ss = container.run(["ss", "-tanp"], check=False).stdout
        raise AssertionError(f"{exc}\n{ss}\n{container.journal('squatter')}") from None
    try:
        result = container.install(*real.args(), "--threads", "3", expect_rc=3)
        assert "port 13305 on 127.0.0.1 is already in use" in str(result["error"]), result

        container.systemctl("start", UNIT)  # started anyway: lemond runs, without its port
        container.wait_for("lemond to log the bind failure", lambda: "Failed to bind" in (
            container.journal(lines=40)))  # fmt: skip
        assert container.show("ActiveState") == "active"
        status = _checks(container, "status", 1)
        assert status["healthy"]["ok"] is False, status  # the answer is not lemond's
        assert "not the service" in str(status["healthy"]["detail"])
        doctor = _checks(container, "doctor", 1)
        assert doctor["port"]["ok"] is False and "not lemond" in str(doctor["port"]["detail"])
    finally:
        container.systemctl("stop", "squatter", check=False)
    container.systemctl("restart", UNIT)
    container.wait_healthy()
    assert all(c["ok"] is True for c in _checks(container, "status", 0).values())


# --- upgrading to the real 11.7.0 and back ----------------------------------------------------

NEW = "11.7.0"


@pytest.fixture(scope="module")
def real_new(e2e: E2E) -> RealRelease:
    return e2e.real_release(NEW)


def _udp_on_any(c: Container, pid: int) -> list[str]:
    """UDP sockets of ``pid`` bound to every interface: lemond's broadcast beacon."""
    return [
        addr for addr, owner in _listeners(c, "u") if owner == pid and not addr.startswith("127.")
    ]


def test_upgrade_to_11_converges(container: Container, real_new: RealRelease, running: int) -> None:
    result = container.install(*real_new.args(), "--threads", "3")
    assert result["ok"] is True and result["changed"] is True, result
    pid = require_active(container)
    assert container.wait_healthy()["version"] == NEW
    config = container.read_json(CONFIG)
    assert (config["config_version"], config["broadcast"]) == (2, False), config
    assert "no_broadcast" not in config and config["ctx_size"] == 4096
    journal = container.journal(lines=200)
    assert "Migrating config" not in journal  # 11.x found nothing to migrate
    assert _udp_on_any(container, pid) == []
    for _ in range(2):  # converged: unchanged, and lemond keeps running (same MainPID)
        again = container.install(*real_new.args(), "--threads", "3")
        assert again["changed"] is False, again
        assert container.main_pid() == pid
    assert all(c["ok"] is True for c in _checks(container, "status", 0).values())
    doctor = _checks(container, "doctor", 0)
    assert doctor["version"]["detail"] == f"lemond {NEW} runs, as installed"


def test_rollback_to_10_does_not_broadcast(
    container: Container, real: RealRelease, real_new: RealRelease, running: int
) -> None:
    migrated = container.read(CONFIG)
    done = container.cli("rollback", "--json", timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    pid = require_active(container)
    assert container.wait_healthy()["version"] == VERSION
    config = container.read_json(CONFIG)
    assert (config["config_version"], config["no_broadcast"]) == (1, True), config
    assert _udp_on_any(container, pid) == []  # no beacon on 0.0.0.0
    assert all(c["ok"] is True for c in _checks(container, "status", 0).values())
    unchanged = container.install(*real.args(), "--threads", "3")
    assert unchanged["changed"] is False, unchanged  # as the rollback left it
    assert container.main_pid() == pid

    forward = container.install(*real_new.args(), "--threads", "3")
    assert forward["ok"] is True and forward["changed"] is True
    assert container.wait_healthy()["version"] == NEW
    assert json.loads(container.read(CONFIG)) == json.loads(migrated)  # what 11.x ran with
    assert container.install(*real_new.args(), "--threads", "3")["changed"] is False


def test_a_host_without_11s_libraries_is_refused_before_anything_changes(
    container: Container, real: RealRelease, real_new: RealRelease, running: int
) -> None:
    """11.x links libdrm; a minimal Debian lacks it: the preflight says which package."""
    back = container.cli("rollback", "--json", timeout=120)
    assert back.returncode == 0, back.stdout + back.stderr
    container.run(["dpkg", "--purge", "--force-depends", "libdrm-amdgpu1", "libdrm2"])
    # 11.7.0's tree is kept as the previous release: promoting it is checked all the same.
    before = container.snapshot("/opt", "/var/lib/hal0")
    result = container.install(*real_new.args(), "--threads", "3", expect_rc=1)
    error = str(result["error"])
    # lemond links libdrm_amdgpu directly (libdrm.so.2 comes through it, and with the
    # package's dependencies).
    expected = "lemond 11.7.0 needs libdrm_amdgpu.so.1 (Debian: libdrm-amdgpu1), which this host"
    assert error.startswith(f"[Lemonade release] {expected}"), error
    assert "apt-get install libdrm-amdgpu1" in error, error
    after = container.snapshot("/opt", "/var/lib/hal0")
    changed = [p for p in before.keys() | after.keys() if before.get(p) != after.get(p)]
    assert [p for p in changed if not p.startswith("/var/lib/hal0/lemonade/")] == [], changed
    assert container.health()["version"] == VERSION  # 10.6.0 still serving
