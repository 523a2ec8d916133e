"""Nothing hal0 runs or writes reaches root's terminal.

Row 3: a process running as hal0 that holds root's terminal can push keystrokes into root's
shell with ``TIOCSTI`` (this kernel allows it to unprivileged processes on their controlling
terminal), and hal0 can make any process of its uid do that through ptrace.  Row 11: bytes hal0
wrote (config.json) or a process chose (its command line) must not reach the terminal raw.

"Root's terminal" is a real pty here: the command under test runs with the pty's slave as its
controlling terminal (``setsid --ctty``), and the test reads the master side, as a terminal
emulator would.
"""

from __future__ import annotations

import json
import os
import pty
import select
import socket
import stat
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import Served, install_args
from tests.support.attacker import (
    NOBODY,
    SYSTEM_PYTHON,
    Account,
    act_as,
    run_cli,
    sandbox_account,
    traversable_root,
)

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="acting as another uid needs root")

ESC = "\x1b"
MARKER = "hal0-was-here"
# What a hijacked hal0 process does with root's terminal: type a command into root's shell.
INJECT = f"""
import errno, fcntl, json, os, termios
report = {{"stdin": os.readlink("/proc/self/fd/0"), "fds": sorted(os.listdir("/proc/self/fd")),
          "sid": os.getsid(0)}}
try:
    tty = os.open("/dev/tty", os.O_RDWR)
except OSError as exc:
    report["tty"] = errno.errorcode[exc.errno]
else:
    for byte in b"echo {MARKER}\\n":
        fcntl.ioctl(tty, termios.TIOCSTI, bytes([byte]))
    report["tty"] = "injected"
print(json.dumps(report))
"""


def _on_a_terminal(argv: list[str], *, timeout: float = 60) -> tuple[int, str, str]:
    """Run ``argv`` with a fresh pty as its controlling terminal and stdin; return its exit
    code, its stdout (a pipe) and everything that appeared on the terminal, including what a
    shell reading that terminal would have been handed."""
    master, slave = pty.openpty()
    try:
        process = subprocess.Popen(
            ["setsid", "--ctty", "--wait", *argv],
            stdin=slave, stdout=subprocess.PIPE, stderr=slave, text=True,
        )  # fmt: skip
        out, _ = process.communicate(timeout=timeout)
        # What is left in the terminal's input queue is what root's shell would read next.
        os.set_blocking(slave, False)
        try:
            pending = os.read(slave, 4096).decode(errors="replace")
        except BlockingIOError:
            pending = ""
        seen = ""
        while select.select([master], [], [], 0.2)[0]:
            chunk = os.read(master, 4096)
            if not chunk:
                break
            seen += chunk.decode(errors="replace")
        return process.returncode, out, seen + pending
    finally:
        os.close(master)
        os.close(slave)


def test_a_process_the_runner_starts_as_hal0_gets_no_terminal_to_type_into() -> None:
    """The runner is the one seam that starts processes; one it runs as another account
    (doctor's GPU self-test runs as hal0) must hold nothing of root's terminal."""
    child = textwrap.dedent(f"""
        import sys
        from hal0_lemonade.runner import Identity, SubprocessRunner
        done = SubprocessRunner().run(
            [{SYSTEM_PYTHON!r}, "-I", "-c", {INJECT!r}], check=False,
            run_as=Identity({NOBODY}, {NOBODY}),
        )
        sys.stdout.write(done.stdout)
    """)
    code, out, terminal = _on_a_terminal([sys.executable, "-c", child])
    assert code == 0, terminal
    report = json.loads(out)
    assert report["tty"] == "ENXIO"  # no controlling terminal at all
    assert report["stdin"] == "/dev/null"
    assert set(report["fds"]) <= {"0", "1", "2", "3"}  # 3: the listdir itself
    assert report["sid"] != os.getsid(0)
    assert MARKER not in terminal  # nothing was typed into the shell


@pytest.fixture
def gpu_root(served: Callable[..., Served]) -> Iterator[tuple[Path, Account]]:
    """An installed sandbox whose "GPU node" is /dev/tty's device (5,0): opening it succeeds
    exactly when the opener has a controlling terminal, so doctor's self-test, which opens
    every GPU node as hal0, tells whether hal0's process was handed root's terminal."""
    with traversable_root() as root:
        (root / "etc").mkdir()
        (root / "etc/group").write_text("render:x:991:\n")
        s = served()
        assert run_cli(*install_args(root, s)).returncode == 0
        node = root / "dev/kfd"
        node.parent.mkdir()
        os.mknod(node, stat.S_IFCHR | 0o666, os.makedev(5, 0))
        node.chmod(0o666)
        yield root, sandbox_account(root)


def test_doctors_self_test_as_hal0_is_not_handed_roots_terminal(
    gpu_root: tuple[Path, Account],
) -> None:
    root, _ = gpu_root
    argv = [sys.executable, "-m", "hal0_lemonade", "doctor", "--root", str(root), "--json"]
    _, out, _ = _on_a_terminal(argv)
    gpu = next(c for c in json.loads(out)["checks"] if c["name"] == "gpu")
    assert "ENXIO" in gpu["detail"], gpu  # /dev/tty did not open: no controlling terminal


# --- row 11: escapes -------------------------------------------------------------------------


def test_dry_run_shows_hal0s_config_bytes_escaped(
    hal0_sandbox: tuple[Path, Served, Account],
) -> None:
    root, s, hal0 = hal0_sandbox
    config = root / "var/lib/hal0/lemonade/config.json"
    evil = f'{{"x": "{ESC}]0;owned\a{ESC}[2J{ESC}[1A\u202e"}}\n'
    act_as(hal0, f"open({str(config)!r}, 'w').write({evil!r})")
    args = [a for a in install_args(root, s) if a != "--json"]
    code, out, terminal = _on_a_terminal(
        [sys.executable, "-m", "hal0_lemonade", *map(str, args), "--dry-run"]
    )
    assert code == 0, terminal
    assert '+  "host": "127.0.0.1",' in out  # the diff is there...
    assert "\\x1b]0;owned\\x07\\x1b[2J" in out and "\\u202e" in out  # ...shown escaped
    for raw in (ESC, "\a", "\u202e"):
        assert raw not in out and raw not in terminal


def test_a_process_calling_itself_lemond_on_the_port_is_not_trusted(
    served: Callable[..., Served],
) -> None:
    with traversable_root() as root:
        s = served()
        (root / "etc/hal0").mkdir(parents=True)
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        (root / "etc/hal0/lemonade.toml").write_text(f"port = {port}\n")
        assert run_cli(*install_args(root, s)).returncode == 0
        # Another local user binds the port, names itself lemond, and puts escapes in argv.
        squatter = subprocess.Popen(
            ["bash", "-c", f'exec -a "$NAME" {SYSTEM_PYTHON} -c "$CODE"'],
            env={
                "NAME": f"{ESC}[32mlemond{ESC}[0m",
                "CODE": textwrap.dedent(f"""
                    import ctypes, socket, time
                    ctypes.CDLL(None).prctl(15, b"lemond")  # PR_SET_NAME: comm is "lemond"
                    s = socket.socket(); s.bind(("127.0.0.1", {port})); s.listen()
                    time.sleep(60)
                """),
            },
            user=NOBODY, group=NOBODY, extra_groups=[],
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                with socket.socket() as sock:
                    if sock.connect_ex(("127.0.0.1", port)) == 0:
                        break
                time.sleep(0.05)
            code, out, terminal = _on_a_terminal(
                [sys.executable, "-m", "hal0_lemonade", "doctor", "--root", str(root)]
            )
        finally:
            squatter.kill()
            squatter.wait()
    assert code == 1
    port_line = next(line for line in out.splitlines() if " port " in line)
    assert port_line.startswith("FAIL"), out
    assert f"pid {squatter.pid}" in port_line and "not lemond" in port_line
    assert "\\x1b[32mlemond\\x1b[0m" in port_line  # its command line, shown escaped
    assert ESC not in out and ESC not in terminal
