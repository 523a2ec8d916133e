"""One install under ``strace -f -tt -T --seccomp-bpf``: what it runs and how long it syncs.

Only process starts and exits and the sync calls are traced (seccomp-bpf keeps the rest
of the process untouched), so the run is close to an untraced one.  Gives each child
process (what it runs, when it starts after the installer's own exec, how long it lives)
and the count and total time of each kind of sync call, and of each file it syncs
(``-y`` names a descriptor's path).  Not a measurement of record: it shows where fixed
costs sit.
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
_RESUMED = re.compile(r"^<\.\.\. (\w+) resumed>")
_TARGET = re.compile(r"^\w+\(\d+<([^>]*)>")


def _short(text: str, names: Mapping[str, str]) -> str:
    """``names`` replaced, and the random or pid suffixes of temp names made alike."""
    for long, short in names.items():
        text = text.replace(long, short)
    text = re.sub(r"([.-])(tmp-|staging-)?[0-9a-f]{8}\b", r"\1\2*", text)
    return re.sub(r"(/etc/\w+)\.\d+$", r"\1.PID", text)


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
        self.targets: dict[str, list[float]] = {}  # "call path": durations
        self.unfinished: dict[tuple[int, str], str] = {}  # (pid, call): its first half

    def execve(self, pid: int, at: float, rest: str, args: str) -> None:
        label = _short(" ".join(re.findall(r'"((?:[^"\\]|\\.)*)"', args)[:3]), self.names)
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
            self.sync(pid, rest)

    def sync(self, pid: int, rest: str) -> None:
        resumed = _RESUMED.match(rest)
        name = resumed.group(1) if resumed else rest.split("(", 1)[0]
        if name not in SYNCS:
            return
        if "<unfinished ...>" in rest:
            self.unfinished[(pid, name)] = rest
            return
        head = self.unfinished.pop((pid, name), "") if resumed else rest
        took = _DURATION.search(rest)
        if took is None:
            return
        self.syncs.setdefault(name, []).append(float(took.group(1)))
        target = _TARGET.match(head)
        path = _short(target.group(1), self.names) if target else ""
        self.targets.setdefault(f"{name} {path}".rstrip(), []).append(float(took.group(1)))


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
    out.sync_targets = sorted(
        ((k, len(v), sum(v)) for k, v in p.targets.items()), key=lambda t: t[2], reverse=True
    )
    return out


def trace(argv: Sequence[str | Path], names: Mapping[str, str]) -> Timeline:
    with tempfile.NamedTemporaryFile("r", suffix=".strace") as log:
        done = subprocess.run(
            [
                "strace", "-f", "-qq", "-tt", "-T", "-y", "--seccomp-bpf", "-s", "256",
                "-o", log.name, "-e", "trace=execve,exit_group," + ",".join(SYNCS),
                *map(str, argv),
            ],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False,
        )  # fmt: skip
        out = parse(Path(log.name).read_text().splitlines(), names)
        out.code = done.returncode
        return out
