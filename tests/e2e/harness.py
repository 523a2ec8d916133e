"""Boot real systemd in systemd-nspawn and drive it from the host through nsenter.

The recipe is the measured one from SYSTEMD-E2E-NOTES.md: nspawn with ``--register=no
--keep-unit`` (no host systemd here), ``--private-network`` (only ``lo`` inside), the
container's PID 1 found as the ``systemd`` child of nspawn, and every command run in all of
its namespaces with ``nsenter -t LEADER -a``. Everything is wrapped in ``timeout`` and the
nspawn process group is killed when anything goes wrong.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import shlex
import signal
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

UNIT = "hal0-lemonade"
# The installer as a host gets it: the one-file pyz, bound in read-only, then installed the
# way README says (install -m 0755 ... /usr/local/sbin/hal0-lemonade) and run by the root's
# own python3 through its shebang.
PYZ = "/pyz/hal0-lemonade.pyz"
EMBED = "/pyz/lemonade-step.sh"  # deploy/embed/lemonade-step.sh, beside it
CLI = "/usr/local/sbin/hal0-lemonade"
RELEASES = "/releases"
ARTIFACT_PORT = 8080
HEALTH_URL = "http://127.0.0.1:13305/api/v1/health"
STATE_DIR = "/var/lib/hal0/lemonade"
CONFIG = f"{STATE_DIR}/config.json"
UNIT_FILE = f"/etc/systemd/system/{UNIT}.service"
LIVE = "/opt/lemonade"
MARKER = f"{LIVE}/.installed-version"
SHUTDOWN_LOG = f"{STATE_DIR}/shutdown-requests.log"

# A clean environment inside: the host's PIP_*, PYTHON* and PATH must not leak in.
CONTAINER_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "HOME": "/root",
    "LANG": "C.UTF-8",
    "TERM": "dumb",
    "SYSTEMD_PAGER": "",
    "SYSTEMD_COLORS": "0",
}

BOOT_TIMEOUT = 60.0
# Hard cap on one container's life: a hung test never leaves a container behind.
CONTAINER_LIFETIME = 900
_names = itertools.count(1)


class HarnessError(RuntimeError):
    """The harness itself could not do its job (boot, nsenter, ...)."""


def _children(pid: int) -> list[tuple[int, str]]:
    """(pid, comm) of every live process whose parent is ``pid``."""
    found: list[tuple[int, str]] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # comm is in parentheses and may itself hold spaces or parentheses.
        comm = stat[stat.index("(") + 1 : stat.rindex(")")]
        ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        if ppid == pid:
            found.append((int(entry.name), comm))
    return found


def _child_named(pid: int, comm: str) -> int | None:
    return next((child for child, name in _children(pid) if name == comm), None)


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no console log)"


@dataclass
class Container:
    """One booted container: PID 1 is real systemd, commands go in through nsenter."""

    name: str
    leader: int
    process: subprocess.Popen[bytes]
    console_log: Path
    last: subprocess.CompletedProcess[str] | None = field(default=None, repr=False)

    # --- running commands -----------------------------------------------------------------

    def run(
        self,
        cmd: Sequence[str] | str,
        *,
        check: bool = True,
        timeout: float = 60,
        input: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``cmd`` (an argv, or a string for ``sh -c``) inside, as root."""
        argv = ["sh", "-c", cmd] if isinstance(cmd, str) else list(cmd)
        full = [
            "timeout",
            "--kill-after=5",
            str(int(timeout)),
            "nsenter",
            "-t",
            str(self.leader),
            "-a",
            *argv,
        ]
        try:
            result = subprocess.run(
                full,
                input=input,
                capture_output=True,
                text=True,
                env=CONTAINER_ENV,
                timeout=timeout + 15,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise HarnessError(f"{shlex.join(argv)} outlived {timeout + 15}s") from exc
        if check and result.returncode != 0:
            raise AssertionError(
                f"inside {self.name}: {shlex.join(argv)} exited {result.returncode}\n"
                f"--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"
            )
        return result

    def out(self, cmd: Sequence[str] | str, *, timeout: float = 60) -> str:
        """stdout of a command that must succeed, stripped."""
        return self.run(cmd, timeout=timeout).stdout.strip()

    def exists(self, path: str) -> bool:
        return self.run(["test", "-e", path], check=False).returncode == 0

    def read(self, path: str) -> str:
        return self.run(["cat", path]).stdout

    def read_json(self, path: str) -> Any:
        return json.loads(self.read(path))

    # --- the CLI under test ---------------------------------------------------------------

    def cli(self, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        """Run ``hal0-lemonade ARGS`` and remember the result in ``self.last``."""
        self.last = self.run([CLI, *args], check=False, timeout=timeout)
        return self.last

    def install(self, *args: str, expect_rc: int = 0, timeout: float = 180) -> dict[str, Any]:
        """``hal0-lemonade install --json ARGS``: assert the exit code, return the JSON."""
        result = self.cli("install", "--json", *args, timeout=timeout)
        context = (
            f"hal0-lemonade install --json {shlex.join(args)} exited {result.returncode}\n"
            f"--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"
        )
        if result.returncode != expect_rc:
            raise AssertionError(
                f"expected exit {expect_rc}; {context}\n--- journal\n{self.journal()}"
            )
        try:
            data = json.loads(result.stdout)
        except ValueError as exc:
            raise AssertionError(
                f"stdout is not exactly one JSON object: {exc}; {context}"
            ) from exc
        assert isinstance(data, dict), f"stdout JSON is not an object; {context}"
        return data

    def status(self, *, expect_rc: int) -> dict[str, Any]:
        """``hal0-lemonade status --json``: assert the exit code, return the JSON."""
        result = self.cli("status", "--json", timeout=60)
        assert result.returncode == expect_rc, (
            f"status exited {result.returncode}, expected {expect_rc}\n"
            f"--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"
        )
        data = json.loads(result.stdout)
        assert isinstance(data, dict), result.stdout
        return data

    # --- systemd and the daemon -----------------------------------------------------------

    def show(self, prop: str, unit: str = UNIT) -> str:
        """``systemctl show -p PROP --value UNIT``."""
        return self.out(["systemctl", "show", "-p", prop, "--value", unit])

    def systemctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.run(["systemctl", *args], check=check)

    def main_pid(self) -> int:
        return int(self.show("MainPID"))

    def journal(self, unit: str = UNIT, lines: int = 60) -> str:
        result = self.run(
            ["journalctl", "--no-pager", "-o", "short-monotonic", "-n", str(lines), "-u", unit],
            check=False,
        )
        return result.stdout + result.stderr

    def http_get(self, url: str, *, timeout: float = 5) -> Any:
        """GET ``url`` with curl inside the container and parse the JSON answer."""
        body = self.out(["curl", "-fsS", "--max-time", str(int(timeout)), url])
        return json.loads(body)

    def health(self) -> dict[str, Any]:
        data = self.http_get(HEALTH_URL)
        assert isinstance(data, dict), data
        return data

    def wait_healthy(self, timeout: float = 30, *, pid: int | None = None) -> dict[str, Any]:
        """Poll health until it answers (from process ``pid`` when given)."""
        deadline = time.monotonic() + timeout
        last_error = ""
        while True:
            result = self.run(["curl", "-fsS", "--max-time", "2", HEALTH_URL], check=False)
            if result.returncode == 0:
                data: dict[str, Any] = json.loads(result.stdout)
                if pid is None or data.get("pid") == pid:
                    return data
                last_error = f"answered from pid {data.get('pid')}, waiting for {pid}"
            else:
                last_error = result.stderr.strip()
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"health did not answer within {timeout}s: {last_error}\n"
                    f"--- journal\n{self.journal()}"
                )
            time.sleep(0.2)

    def wait_for(self, what: str, predicate: Callable[[], bool], timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout}s waiting for {what}")
            time.sleep(0.2)

    def probe(self, kind: str, path: str) -> dict[str, Any]:
        """Ask the running daemon (inside its sandbox) to write or open ``path``."""
        data = self.http_get(f"http://127.0.0.1:13305/test/{kind}?path={quote(path, safe='/')}")
        assert isinstance(data, dict), f"probe {kind} {path}: {data!r}"
        return data

    # --- snapshots ------------------------------------------------------------------------

    def snapshot(self, *paths: str, exclude: Sequence[str] = ()) -> dict[str, list[Any]]:
        """lstat of every entry under ``paths`` (not following links), keyed by path."""
        script = _SNAPSHOT_SCRIPT
        out = self.out(["python3", "-c", script, json.dumps([list(paths), list(exclude)])])
        data: dict[str, list[Any]] = json.loads(out)
        return data

    # --- lifecycle ------------------------------------------------------------------------

    def wait_running(self, timeout: float = BOOT_TIMEOUT) -> str:
        deadline = time.monotonic() + timeout
        state = ""
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise HarnessError(
                    f"nspawn exited {self.process.returncode} while booting\n"
                    f"{_tail(self.console_log)}"
                )
            result = self.run(["systemctl", "is-system-running"], check=False, timeout=10)
            state = result.stdout.strip()
            if state in {"running", "degraded"}:
                return state
            time.sleep(0.1)
        raise HarnessError(
            f"systemctl is-system-running still says {state!r} after {timeout}s\n"
            f"{_tail(self.console_log)}"
        )

    def poweroff(self, timeout: float = 30) -> int:
        """Power off cleanly (ExecStop runs); kill the container if that does not work."""
        if self.process.poll() is None:
            with contextlib.suppress(HarnessError):
                self.run(["systemctl", "poweroff"], check=False, timeout=10)
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise HarnessError(
                f"{self.name} did not power off within {timeout}s\n{_tail(self.console_log)}"
            ) from None

    def kill(self) -> None:
        """SIGKILL the container's PID 1 and the whole timeout/nspawn process group."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.leader, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=10)


_SNAPSHOT_SCRIPT = r"""
import hashlib, json, os, stat, sys
roots, exclude = json.loads(sys.argv[1])
out = {}
def record(path):
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        out[path] = ["absent"]
        return False
    kind = stat.S_IFMT(st.st_mode)
    entry = [kind, st.st_ino, st.st_mtime_ns, st.st_size, stat.S_IMODE(st.st_mode),
             st.st_uid, st.st_gid]
    if stat.S_ISLNK(st.st_mode):
        entry.append(os.readlink(path))
    elif stat.S_ISREG(st.st_mode) and st.st_size <= 1 << 20:
        with open(path, "rb") as fh:
            entry.append(hashlib.sha256(fh.read()).hexdigest())
    out[path] = entry
    return stat.S_ISDIR(st.st_mode)
for root in roots:
    if not record(root):
        continue
    for top, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if os.path.join(top, d) not in exclude]
        for name in dirs + files:
            record(os.path.join(top, name))
print(json.dumps(out, sort_keys=True))
"""


def diff_snapshots(before: dict[str, list[Any]], after: dict[str, list[Any]]) -> list[str]:
    """Human-readable differences, empty when nothing changed."""
    lines: list[str] = []
    for path in sorted(before.keys() | after.keys()):
        old, new = before.get(path), after.get(path)
        if old != new:
            lines.append(f"{path}: {old} -> {new}")
    return lines


@contextlib.contextmanager
def booted(
    rootfs: Path,
    workdir: Path,
    *,
    volatile: bool = True,
    binds_ro: Sequence[tuple[Path, str]] = (),
) -> Iterator[Container]:
    """Boot ``rootfs`` (an overlay over it unless ``volatile=False``) and yield the container.

    The container is powered off on exit, and killed (whole process group) when it does not
    come up or go down cleanly.
    """
    name = f"hal0e2e-{os.getpid()}-{next(_names)}"
    console_log = workdir / f"{name}.console.log"
    argv = [
        "timeout",
        "--kill-after=10",
        str(CONTAINER_LIFETIME),
        "systemd-nspawn",
        "--quiet",
        f"--directory={rootfs}",
        f"--machine={name}",
        "--register=no",
        "--keep-unit",
        "--private-network",
        "--console=passive",
        *(["--volatile=overlay"] if volatile else []),
        *(f"--bind-ro={src}:{dest}" for src, dest in binds_ro),
        "--boot",
    ]
    with console_log.open("wb") as log:
        process = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    container: Container | None = None
    try:
        container = Container(name, _find_leader(process, console_log), process, console_log)
        container.wait_running()
        yield container
    except BaseException:
        if container is not None:
            container.kill()
        else:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=10)
        raise
    else:
        container.poweroff()


def _find_leader(process: subprocess.Popen[bytes], console_log: Path) -> int:
    """The container's PID 1 as seen from the host: timeout -> systemd-nspawn -> systemd."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise HarnessError(
                f"systemd-nspawn exited {process.returncode} before booting\n{_tail(console_log)}"
            )
        nspawn = _child_named(process.pid, "systemd-nspawn")
        leader = _child_named(nspawn, "systemd") if nspawn is not None else None
        if leader is not None:
            return leader
        time.sleep(0.05)
    raise HarnessError(f"no systemd under systemd-nspawn after 20s\n{_tail(console_log)}")


@contextlib.contextmanager
def writable_overlay(rootfs: Path, workdir: Path) -> Iterator[Path]:
    """A persistent writable view of ``rootfs`` (overlayfs; the root itself never changes).

    Boots of it keep their changes, like a ``cp -a`` copy, but it costs no copy: used for
    the reboot scenario, where two boots must share one disk.
    """
    base = workdir / f"overlay-{next(_names)}"
    upper, work, merged = base / "upper", base / "work", base / "merged"
    for directory in (upper, work, merged):
        directory.mkdir(parents=True)
    options = f"lowerdir={rootfs},upperdir={upper},workdir={work}"
    subprocess.run(
        ["mount", "-t", "overlay", "overlay", "-o", options, str(merged)],
        check=True, capture_output=True, timeout=30,
    )  # fmt: skip
    try:
        yield merged
    finally:
        if subprocess.run(["umount", str(merged)], check=False, timeout=30).returncode != 0:
            subprocess.run(["umount", "--lazy", str(merged)], check=False, timeout=30)


def nspawn_command(
    rootfs: Path,
    command: Sequence[str],
    *,
    binds: Sequence[tuple[Path, str]] = (),
    binds_ro: Sequence[tuple[Path, str]] = (),
    timeout: int = 300,
) -> list[str]:
    """argv that runs one command in a throwaway (volatile, offline) container: no boot."""
    return [
        "timeout",
        "--kill-after=10",
        str(timeout),
        "systemd-nspawn",
        "--quiet",
        f"--directory={rootfs}",
        f"--machine=hal0e2e-{os.getpid()}-run{next(_names)}",
        "--register=no",
        "--keep-unit",
        "--private-network",
        "--volatile=overlay",
        *(f"--bind={src}:{dest}" for src, dest in binds),
        *(f"--bind-ro={src}:{dest}" for src, dest in binds_ro),
        *(f"--setenv={key}={value}" for key, value in CONTAINER_ENV.items()),
        "--",
        *command,
    ]
