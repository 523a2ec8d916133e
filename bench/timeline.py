"""One install under ``strace -f -tt -T --seccomp-bpf``: what it runs and how long it syncs.

Only process starts and exits and the sync calls are traced (seccomp-bpf keeps the rest
of the process untouched), so the run is close to an untraced one.  Gives each child
process (what it runs, when it starts after the installer's own exec, how long it lives)
and the count and total time of each kind of sync call.  Not a measurement of record:
it shows where fixed costs sit.
"""

from __future__ import annotations

import re
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path

from bench.results import Timeline

SYNCS = ("fsync", "fdatasync", "syncfs", "sync", "sync_file_range")
_LINE = re.compile(r"^(\d+)\s+(\d\d:\d\d:\d\d\.\d+)\s+(.*)$")
_EXEC = re.compile(r'^execve\("([^"]*)", \[(.*?)\]')
_DURATION = re.compile(r"<(\d+\.\d+)>\s*$")
_OK = re.compile(r"\) = 0( <|$)")


def _seconds(stamp: str) -> float:
    t = datetime.strptime(stamp, "%H:%M:%S.%f")
    return t.hour * 3600 + t.minute * 60 + t.second + t.microsecond / 1e6


class _Parse:
    def __init__(self, names: Mapping[str, str]) -> None:
        self.names = names
        self.started: dict[int, tuple[str, float]] = {}  # pid: what it runs, when
        self.ended: dict[int, float] = {}
        self.pending: dict[int, tuple[str, float]] = {}  # an execve not yet returned
        self.syncs: dict[str, list[float]] = {}

    def execve(self, pid: int, at: float, rest: str, args: str) -> None:
        label = " ".join(re.findall(r'"((?:[^"\\]|\\.)*)"', args)[:3])
        for long, short in self.names.items():
            label = label.replace(long, short)
        if "<unfinished ...>" in rest:
            self.pending[pid] = (label, at)
        elif _OK.search(rest):  # a failed execve (PATH search) runs nothing
            self.started.setdefault(pid, (label, at))

    def line(self, pid: int, at: float, rest: str) -> None:
        exe = _EXEC.match(rest)
        if exe:
            self.execve(pid, at, rest, exe.group(2))
        elif rest.startswith("<... execve resumed>"):
            if _OK.search(rest) and pid in self.pending:
                self.started.setdefault(pid, self.pending.pop(pid))
        elif rest.startswith(("exit_group(", "+++ exited")):
            self.ended.setdefault(pid, at)
        else:
            took = _DURATION.search(rest)
            name = rest.split("(", 1)[0]
            if name in SYNCS and took:
                self.syncs.setdefault(name, []).append(float(took.group(1)))


def parse(lines: Sequence[str], names: Mapping[str, str]) -> Timeline:
    """``names``: long strings in child argvs to shorten (a root's path to ROOT)."""
    out = Timeline()
    p = _Parse(names)
    stamps = []
    for line in lines:
        m = _LINE.match(line)
        if m:
            stamps.append(_seconds(m.group(2)))
            p.line(int(m.group(1)), stamps[-1], m.group(3))
    if not stamps or not p.started:
        return out
    first, last = stamps[0], stamps[-1]
    out.wall = last - first
    ordered = sorted(p.started.items(), key=lambda kv: kv[1][1])
    for pid, (label, at) in ordered[1:]:  # the first exec is the installer's own
        out.children.append((label, at - first, p.ended.get(pid, last) - at))
    out.syncs = {k: (len(v), sum(v)) for k, v in p.syncs.items()}
    return out


def trace(argv: Sequence[str | Path], names: Mapping[str, str]) -> Timeline:
    with tempfile.NamedTemporaryFile("r", suffix=".strace") as log:
        done = subprocess.run(
            [
                "strace", "-f", "-qq", "-tt", "-T", "--seccomp-bpf", "-s", "256", "-o", log.name,
                "-e", "trace=execve,exit_group," + ",".join(SYNCS), *map(str, argv),
            ],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False,
        )  # fmt: skip
        out = parse(Path(log.name).read_text().splitlines(), names)
        out.code = done.returncode
        return out
