"""Who listens on a TCP port: ``/proc/net/tcp{,6}`` and the socket inodes in ``/proc/*/fd``.

The same facts ``ss -ltnp`` prints, read directly (no extra package, no output format to
depend on).  Parsers are pure; the two readers take the proc root so tests can point them
at a fixture tree.  Processes of other users are visible only to root.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

from hal0_lemonade import termsafe

_LISTEN = "0A"


class Listener(NamedTuple):
    address: str
    port: int
    inode: int


class Holder(NamedTuple):
    pid: int
    comm: str
    argv: tuple[str, ...]
    exe: str  # "" when unreadable

    def describe(self) -> str:
        """The command line, shortened; another user wrote it, so escape it too."""
        cmd = " ".join(self.argv) or self.comm
        cmd = cmd if len(cmd) <= 80 else cmd[:77] + "..."
        return termsafe.escape(cmd)


def _address(hex_addr: str) -> str:
    import ipaddress  # doctor only; not on install's start-up path

    raw = bytes.fromhex(hex_addr)
    # The kernel prints each 32-bit word in host (little-endian) order.
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    return str(ipaddress.ip_address(words))


def parse_proc_net_tcp(text: str) -> list[Listener]:
    """The LISTEN sockets of one /proc/net/tcp or tcp6 table."""
    found = []
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 10 or fields[3] != _LISTEN:
            continue
        addr, _, port = fields[1].partition(":")
        try:
            found.append(Listener(_address(addr), int(port, 16), int(fields[9])))
        except ValueError:
            continue
    return found


def listeners(port: int, proc: Path = Path("/proc")) -> list[Listener]:
    found: list[Listener] = []
    for table in ("net/tcp", "net/tcp6"):
        try:
            text = (proc / table).read_text()
        except OSError:
            continue
        found.extend(lst for lst in parse_proc_net_tcp(text) if lst.port == port)
    return found


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def holders(inodes: set[int], proc: Path = Path("/proc")) -> list[Holder]:
    """Processes with an open fd on one of the socket ``inodes``."""
    wanted = {f"socket:[{i}]" for i in inodes}
    found = []
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fds = list((entry / "fd").iterdir())
        except OSError:  # gone, or another user's process and we are not root
            continue
        for fd in fds:
            try:
                target = str(fd.readlink())
            except OSError:
                continue
            if target in wanted:
                try:
                    exe = str((entry / "exe").readlink())
                except OSError:
                    exe = ""
                argv = tuple(a for a in _read(entry / "cmdline").split("\0") if a)
                found.append(Holder(int(entry.name), _read(entry / "comm").strip(), argv, exe))
                break
    return found


def is_service(holder: Holder, main_pid: int, daemon: Path) -> bool:
    """The service's own lemond: systemd's MainPID for it, or (no systemd, a sandbox root) a
    process running the live release's binary.  Never by name: any process may call itself
    ``lemond`` (``prctl``, ``argv[0]``), and one run by another user on the port is not ours.
    """
    if main_pid > 0:
        return holder.pid == main_pid
    try:
        binary = daemon.resolve(strict=True)
    except OSError:
        return False
    if holder.exe and Path(holder.exe) == binary:
        return True
    # A stand-in run as a script: the interpreter is the exe, the script its first argument.
    return len(holder.argv) > 1 and _resolves_to(holder.argv[1], binary)


def _resolves_to(arg: str, binary: Path) -> bool:
    try:
        return Path(arg).is_absolute() and Path(arg).resolve(strict=True) == binary
    except OSError:
        return False
