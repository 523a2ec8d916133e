"""The process around the CLI: the console script and ``python -m hal0_lemonade`` start here.

Two things a long-lived program would not do, each measured on the bench machine (see
BENCHMARKS.md), where the whole cold install takes ~0.8 s:

* The cyclic garbage collector is off while the CLI's modules are imported and then frozen
  (``gc.freeze``): imports create ~20k long-lived objects and no garbage, yet triggered ~35
  collections (~9 ms), and every later full collection would walk them all again.
  Collection is back on for the command itself.
* Once :func:`cli.main` is done, the process leaves with ``os._exit`` instead of tearing the
  interpreter down (clearing every module's namespace, with full collections in between):
  40-60 ms with nothing left to do, since every file the installer wrote is closed, and synced
  where that matters, before ``main`` returns.  What a normal exit still does for others --
  atexit hooks, flushing the standard streams -- is done first; whenever a quick exit is not
  clearly safe (another thread still running, a stream that cannot be flushed), the process
  exits the normal way.

Tests call :func:`cli.main` in-process, never this.
"""

from __future__ import annotations

import atexit
import gc
import os
import sys
import threading
from typing import NoReturn


def run() -> NoReturn:
    gc.disable()
    try:
        from hal0_lemonade import cli
    finally:
        gc.freeze()
        gc.enable()
    exit_now(cli.main())


def exit_now(code: int) -> NoReturn:
    """Leave with ``code`` without the interpreter's teardown when that is safe."""
    if threading.active_count() == 1:
        atexit._run_exitfuncs()  # what Py_FinalizeEx would run first; they are cleared after
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        except (OSError, ValueError):
            pass  # a closed pipe: the normal exit reports it as Python always does
        else:
            os._exit(code)
    sys.exit(code)
