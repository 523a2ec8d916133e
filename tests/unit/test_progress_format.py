"""The download progress renderer, driven by a fake clock."""

from __future__ import annotations

import io

import pytest

from hal0_lemonade import progress


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(
    ("n", "text"),
    [(0, "0 B"), (999, "999 B"), (1000, "1.0 kB"), (45_200_000, "45.2 MB"), (3e12, "3000.0 GB")],
)
def test_format_bytes(n: float, text: str) -> None:
    assert progress.format_bytes(n) == text


@pytest.mark.parametrize(
    ("seconds", "text"), [(None, "--:--"), (0, "0:00"), (75, "1:15"), (3725, "1:02:05")]
)
def test_format_eta(seconds: float | None, text: str) -> None:
    assert progress.format_eta(seconds) == text


def test_live_bar_shows_bytes_rate_and_eta_then_closes_its_line() -> None:
    out, clock = io.StringIO(), Clock()
    bar = progress.Progress(out, "Lemonade 10.6.0", live=True, clock=clock, columns=lambda: 120)
    bar(0, 200_000_000)
    clock.now += 4
    bar(50_000_000, 200_000_000)
    text = out.getvalue()
    assert text.count("\r") == 2, "one redraw per call after the throttle"
    last = text.rsplit("\r", 1)[1]
    assert "[######------------------]" in last
    assert "50.0 MB / 200.0 MB   25%  12.5 MB/s  ETA 0:12" in last
    bar.end()
    assert out.getvalue().endswith("\n")


def test_live_bar_redraws_at_most_ten_times_a_second() -> None:
    out, clock = io.StringIO(), Clock()
    bar = progress.Progress(out, "x", live=True, clock=clock)
    for done in range(1, 100):
        clock.now += 0.001
        bar(done, 1000)
    assert out.getvalue().count("\r") == 1
    bar(1000, 1000)  # the last update is always drawn
    assert out.getvalue().count("\r") == 2


def test_plain_lines_per_quarter_and_no_escape_codes() -> None:
    out, clock = io.StringIO(), Clock()
    bar = progress.Progress(out, "Lemonade 10.6.0", live=False, clock=clock)
    for done in range(0, 1001, 50):
        clock.now += 0.1
        bar(done, 1000)
    lines = out.getvalue().splitlines()
    assert [line.split()[-5] for line in lines] == ["25%", "50%", "75%", "100%"]
    assert "\r" not in out.getvalue() and "\x1b" not in out.getvalue()


def test_resumed_download_rate_counts_only_this_runs_bytes() -> None:
    out, clock = io.StringIO(), Clock()
    bar = progress.Progress(out, "x", live=False, clock=clock)
    bar(900_000, 1_000_000)  # 90 % was kept from an earlier run
    clock.now += 10
    bar(1_000_000, 1_000_000)
    assert "10.0 kB/s" in out.getvalue().splitlines()[-1]


def test_unknown_total_shows_bytes_and_rate_only() -> None:
    assert progress.describe(2_000_000, None, 1_000_000.0) == "2.0 MB  1.0 MB/s"


@pytest.mark.parametrize(
    ("env", "tty", "expected"),
    [({}, True, True), ({"NO_COLOR": "1"}, True, False), ({}, False, False),
     ({"TERM": "dumb"}, True, False)],
)  # fmt: skip
def test_colour_needs_a_terminal_and_no_no_color_variable(
    env: dict[str, str], tty: bool, expected: bool
) -> None:
    class Stream(io.StringIO):
        def isatty(self) -> bool:
            return tty

    assert progress.use_color(Stream(), env) is expected
