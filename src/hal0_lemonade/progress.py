"""Download progress on stderr: a live bar on a terminal, a few plain lines elsewhere.

``fetch`` calls ``progress(done, total)`` as bytes arrive and knows nothing of this module
(pip's split between its download code and its progress wrapper).  The bar shows bytes, rate
and ETA; off a terminal it prints one line per quarter instead of redrawing; ``--quiet`` and
``--json`` show nothing.  Rate and ETA count only the bytes of this run, so a resumed
download does not claim an absurd speed.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TextIO

_REDRAW_S = 0.1
_PLAIN_EVERY_S = 10.0
_BAR = 24


def format_bytes(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError("unreachable")  # pragma: no cover


def format_eta(seconds: float | None) -> str:
    if seconds is None or seconds < 0 or seconds > 99 * 3600:
        return "--:--"
    s = round(seconds)
    if s >= 3600:
        return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"
    return f"{s // 60}:{s % 60:02d}"


def describe(done: int, total: int | None, rate: float | None) -> str:
    """``45.2 MB / 200.0 MB  23%  12.3 MB/s  ETA 0:13`` (shorter when total is unknown)."""
    speed = f"{format_bytes(rate)}/s" if rate else "-- MB/s"
    if not total:
        return f"{format_bytes(done)}  {speed}"
    eta = (total - done) / rate if rate else None
    percent = min(100, done * 100 // total)
    return (
        f"{format_bytes(done)} / {format_bytes(total)}  {percent:3d}%  {speed}  "
        f"ETA {format_eta(eta)}"
    )


def bar(done: int, total: int | None, width: int = _BAR) -> str:
    if not total:
        return ""
    filled = min(width, done * width // total)
    return "[" + "#" * filled + "-" * (width - filled) + "] "


def fit(label: str, done: int, total: int | None, rate: float | None, columns: int) -> str:
    """The live line, shorter than ``columns``: a line as wide as the terminal wraps, and every
    redraw (``\\r``) then starts a new line.  What goes first as it narrows: the bar, the
    label, the ETA and rate, then the text is cut."""
    room = max(1, columns - 1)
    info = describe(done, total, rate)
    for candidate in (
        f"{label} {bar(done, total)}{info}",
        f"{label} {bar(done, total, 10)}{info}",
        f"{label} {info}",
        info,
        info.split("  ETA")[0],
        describe(done, total, None).split("  -- MB/s")[0],
    ):
        if len(candidate) <= room:
            return candidate.rstrip()
    return info[:room]


def _columns(stream: TextIO) -> int:
    """The terminal's width, asked again at each redraw (it may be resized); 80 otherwise."""
    try:
        return os.get_terminal_size(stream.fileno()).columns or 80
    except (OSError, ValueError, AttributeError):
        return 80


def use_color(stream: TextIO, env: Mapping[str, str] | None = None) -> bool:
    """Colour only on a terminal, and never with NO_COLOR set (https://no-color.org)."""
    env = os.environ if env is None else env
    if env.get("NO_COLOR") or env.get("TERM") == "dumb":
        return False
    return _isatty(stream)


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


@dataclass
class Progress:
    """The ``progress(done, total)`` callback, rendering to ``out`` (stderr)."""

    out: TextIO
    label: str
    live: bool  # True: redraw one line (a terminal); False: plain lines
    clock: Callable[[], float] = time.monotonic
    columns: Callable[[], int] | None = None  # the terminal's width (None: ask the terminal)
    _start: float | None = field(default=None, init=False)
    _base: int = field(default=0, init=False)
    _last_draw: float = field(default=0.0, init=False)  # set to the start on the first call
    _last_quarter: int = field(default=-1, init=False)
    _open: bool = field(default=False, init=False)
    _last: tuple[int, int | None] = field(default=(0, None), init=False)

    def __call__(self, done: int, total: int | None) -> None:
        now = self.clock()
        if self._start is None or done < self._last[0]:  # first call, or a restarted fetch
            self._start, self._base = now, done
            self._last_quarter, self._last_draw = -1, now
        self._last = (done, total)
        finished = total is not None and done >= total
        if self.live:
            if finished or now - self._last_draw >= _REDRAW_S or not self._open:
                self._draw(now, done, total)
        else:
            self._plain(now, done, total)

    def _rate(self, now: float, done: int) -> float | None:
        elapsed = now - self._start if self._start is not None else 0.0
        return (done - self._base) / elapsed if elapsed > 0 and done > self._base else None

    def _draw(self, now: float, done: int, total: int | None) -> None:
        width = self.columns() if self.columns is not None else _columns(self.out)
        text = fit(self.label, done, total, self._rate(now, done), width)
        self.out.write(f"\r\x1b[2K{text}")
        self.out.flush()
        self._open = True
        self._last_draw = now

    def _plain(self, now: float, done: int, total: int | None) -> None:
        # A line per quarter, and one every 10 s in between (or without a known total).
        quarter = min(4, done * 4 // total) if total else self._last_quarter
        due = quarter > max(0, self._last_quarter) or now - self._last_draw >= _PLAIN_EVERY_S
        if due:
            self._last_quarter = quarter
            self._last_draw = now
            rate = self._rate(now, done)
            self.out.write(f"{self.label}: {describe(done, total, rate)}\n")
            self.out.flush()

    def end(self) -> None:
        """Close the live line (before a step line or an error is printed)."""
        if self._open:
            self.out.write("\n")
            self.out.flush()
            self._open = False


def for_stream(out: TextIO, label: str, *, quiet: bool) -> Progress | None:
    if quiet:
        return None
    live = _isatty(out) and os.environ.get("TERM") != "dumb"
    return Progress(out, label, live)
