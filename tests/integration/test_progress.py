"""Progress and output through the real CLI: a bar on a terminal, plain lines elsewhere,
NO_COLOR, --quiet, --help examples for every command, and shell completion."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import shutil
import struct
import subprocess
import sys
import termios
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.integration.conftest import CLI, Served, install_args

HERE = Path(__file__).resolve().parents[2]
SGR_COLOUR = "\x1b[3"  # click.style's foreground colours: ESC [ 3x m


def _on_a_terminal(args: list[str], env: dict[str, str], columns: int = 120) -> tuple[int, str]:
    """Run the CLI with stdout and stderr on a pseudo-terminal ``columns`` wide; return (code,
    output)."""
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
    proc = subprocess.Popen(
        [sys.executable, "-m", "hal0_lemonade", *args],
        stdin=subprocess.DEVNULL,
        stdout=follower,
        stderr=follower,
        env={"PATH": os.environ["PATH"], "TERM": "xterm", **env},
        cwd=HERE,
    )
    os.close(follower)
    chunks = []
    while True:
        ready, _, _ = select.select([leader], [], [], 30)
        if not ready:
            proc.kill()
            raise AssertionError("no output for 30 s")
        try:
            data = os.read(leader, 65536)
        except OSError:  # EIO: every writer closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(leader)
    return proc.wait(timeout=30), b"".join(chunks).decode()


def _args(root: Path, s: Served, *extra: str) -> list[str]:
    return [str(a) for a in install_args(root, s, *extra) if a != "--json"]


@pytest.fixture
def big(served: Callable[..., Served]) -> Served:
    return served(padding_files=1, padding_bytes=3_000_000)


def test_a_terminal_gets_a_live_bar_and_colours(root: Path, big: Served) -> None:
    code, out = _on_a_terminal(_args(root, big), {})
    assert code == 0, out
    bar = [part for part in out.split("\r\x1b[2K") if part.startswith("Lemonade 10.6.0 [")]
    assert bar, out
    final = bar[-1].split("\r")[0].split("\n")[0]
    assert "[########################]" in final and " 100% " in final
    assert "MB/s" in final and "ETA 0:00" in final
    assert " / " in final and "MB" in final
    assert f"{SGR_COLOUR}3mchanged" in out  # yellow step verdicts
    # The bar's line is closed before the step line: "[2/6]" starts a line of its own.
    assert "\n[2/6] Lemonade release" in out.replace("\r\n", "\n")


@pytest.mark.parametrize("columns", [80, 60, 40])
def test_the_bar_fits_a_narrow_terminal(root: Path, big: Served, columns: int) -> None:
    """A line as wide as the terminal wraps, and each redraw then starts a new line: ~50
    lines for one download at 80 columns.  Every redraw stays narrower than the terminal."""
    code, out = _on_a_terminal(_args(root, big), {"NO_COLOR": "1"}, columns=columns)
    assert code == 0, out
    redraws = [part.split("\r")[0].split("\n")[0] for part in out.split("\r\x1b[2K")[1:]]
    assert redraws, out
    visible = [re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", text) for text in redraws]
    assert max(len(text) for text in visible) < columns, visible
    assert any("MB" in text for text in visible)
    if columns == 80:
        assert visible[-1].startswith("Lemonade 10.6.0 [##########] ")  # a shorter bar


def test_no_color_keeps_the_bar_but_drops_the_colours(root: Path, big: Served) -> None:
    code, out = _on_a_terminal(_args(root, big), {"NO_COLOR": "1"})
    assert code == 0, out
    assert "ETA" in out
    assert SGR_COLOUR not in out and "\x1b[1m" not in out


def test_quiet_on_a_terminal_shows_no_progress(root: Path, big: Served) -> None:
    code, out = _on_a_terminal([*_args(root, big), "--quiet"], {})
    assert code == 0, out
    assert "ETA" not in out and "\r\x1b[2K" not in out
    assert "[6/6] Service start" in out


def test_off_a_terminal_progress_is_plain_lines_on_stderr(
    cli: CLI, root: Path, big: Served
) -> None:
    run = cli(*_args(root, big))
    assert run.code == 0, run.err
    lines = [line for line in run.err.splitlines() if line.startswith("Lemonade 10.6.0: ")]
    assert lines and "100%" in lines[-1] and "/s" in lines[-1]
    assert len(lines) <= 4 + 1, "one line per quarter (plus one per 10 s at most)"
    assert "\r" not in run.err and "\x1b" not in run.err + run.out
    assert "ETA" not in run.out, "progress never goes to stdout"


@pytest.mark.parametrize("flag", ["--quiet", "--json"])
def test_quiet_and_json_print_no_progress(cli: CLI, root: Path, big: Served, flag: str) -> None:
    run = cli(*_args(root, big), flag)
    assert run.code == 0, run.err
    assert "Lemonade 10.6.0: " not in run.err


@pytest.mark.parametrize(
    "command",
    [["install"], ["status"], ["doctor"], ["uninstall"], ["config", "show"]],
)
def test_every_command_has_examples_in_its_help(cli: CLI, command: list[str]) -> None:
    run = cli(*command, "--help")
    assert run.code == 0
    examples = run.out.split("Examples:\n", 1)[1]
    assert f"hal0-lemonade {' '.join(command)}" in examples


def test_top_level_help_documents_completion(cli: CLI) -> None:
    run = cli("--help")
    assert 'eval "$(_HAL0_LEMONADE_COMPLETE=bash_source hal0-lemonade)"' in run.out
    for command in ("install", "status", "doctor", "uninstall", "config"):
        assert f"  {command} " in run.out


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
@pytest.mark.parametrize(
    ("words", "expected"),
    [
        ("hal0-lemonade doc", "doctor"),
        ("hal0-lemonade unin", "uninstall"),
        ("hal0-lemonade uninstall --pu", "--purge"),
        ("hal0-lemonade config ", "show"),
        ("hal0-lemonade install --step-", "--step-offset --step-total"),
    ],
)
def test_bash_completion_as_documented(words: str, expected: str) -> None:
    """The documented eval line, then bash's own completion protocol."""
    cword = len(words.split()) - (0 if words.endswith(" ") else 1)
    script = (
        'eval "$(_HAL0_LEMONADE_COMPLETE=bash_source hal0-lemonade)"\n'
        f"COMP_WORDS=({words}); COMP_CWORD={cword}\n"
        "_hal0_lemonade_completion hal0-lemonade  # bash passes the command name as $1\n"
        'echo "${COMPREPLY[*]}"\n'
    )
    venv_bin = Path(sys.executable).parent
    done = subprocess.run(
        ["bash", "-c", script],
        capture_output=True,
        text=True,
        env={"PATH": f"{venv_bin}:{os.environ['PATH']}"},
        check=False,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == expected.split()
