"""The process around the CLI: ``python -m hal0_lemonade`` / the console script (``entry.run``).

``run`` leaves with ``os._exit`` once ``main`` is done, skipping the interpreter's teardown;
these run real processes to check that nothing a normal exit does for the caller is lost on
the way: buffered output, exit codes, atexit hooks, threads still running.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

# Buffered streams, as on an operator's host (some CI and dev shells export PYTHONUNBUFFERED).
_ENV = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}


def _run(*argv: str, stdout: int = subprocess.PIPE) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *argv],
        stdout=stdout,
        stderr=subprocess.PIPE,
        text=True,
        timeout=60,
        check=False,
        env=_ENV,
    )


def _python(code: str, *, stdout: int = subprocess.PIPE) -> subprocess.CompletedProcess[str]:
    return _run("-c", textwrap.dedent(code), stdout=stdout)


def _cli(*args: str, stdout: int = subprocess.PIPE) -> subprocess.CompletedProcess[str]:
    return _run("-m", "hal0_lemonade", *args, stdout=stdout)


def test_exit_codes_and_messages_come_through() -> None:
    done = _cli("--version")
    assert done.returncode == 0
    assert done.stdout.strip().startswith("hal0-lemonade, version 0.1.0 (inflate: zlib")
    bad = _cli("--no-such-flag")
    assert bad.returncode == 2
    assert "No such option '--no-such-flag'" in bad.stderr


def test_block_buffered_output_is_flushed_before_the_quick_exit(tmp_path: Path) -> None:
    # stdout to a file is block-buffered: without the flush, os._exit would drop it all.
    out = tmp_path / "status.json"
    with out.open("w") as fh:
        done = _cli("status", "--json", "--root", str(tmp_path), stdout=fh.fileno())
    assert done.returncode == 1, done.stderr  # nothing is installed under the empty root
    report = json.loads(out.read_text())
    assert report["ok"] is False
    assert {c["name"] for c in report["checks"]} >= {"release", "unit"}


def test_atexit_hooks_run_and_what_they_print_is_flushed(tmp_path: Path) -> None:
    out = tmp_path / "out.txt"
    with out.open("w") as fh:  # a file: block-buffered, only the final flush writes it
        done = _python(
            """
            import atexit, sys
            atexit.register(sys.stdout.write, "hook ran\\n")
            from hal0_lemonade.entry import run
            sys.argv = ["hal0-lemonade", "--version"]
            run()
            """,
            stdout=fh.fileno(),
        )
    assert done.returncode == 0, done.stderr
    lines = out.read_text().splitlines()
    assert lines[0].startswith("hal0-lemonade, version 0.1.0 (inflate: ")
    assert lines[1:] == ["hook ran"]


def test_the_interpreter_teardown_is_skipped() -> None:
    # What the quick exit is for: module globals are not torn down one by one.
    done = _python(
        """
        import sys
        class Noisy:
            def __del__(self):
                print("torn down", flush=True)
        kept = Noisy()
        from hal0_lemonade.entry import run
        sys.argv = ["hal0-lemonade", "--version"]
        run()
        """
    )
    assert done.returncode == 0, done.stderr
    assert "torn down" not in done.stdout


def test_a_thread_still_running_gets_the_normal_exit() -> None:
    done = _python(
        """
        import sys, threading, time
        def late():
            time.sleep(0.3)
            print("thread finished", flush=True)
        threading.Thread(target=late).start()
        from hal0_lemonade.entry import run
        sys.argv = ["hal0-lemonade", "--no-such-flag"]
        run()
        """
    )
    assert done.returncode == 2, done.stderr
    assert "thread finished" in done.stdout


def test_collection_is_back_on_for_the_command_with_the_imports_frozen() -> None:
    done = _python(
        """
        import gc
        from hal0_lemonade import cli, entry
        def command():
            print(gc.isenabled(), gc.get_freeze_count() > 10_000)
            return 3
        cli.main = command
        entry.run()
        """
    )
    assert (done.returncode, done.stdout.split()) == (3, ["True", "True"]), done.stderr
