"""Pieces every subcommand shares: exit codes, the --root type, and the error guard."""

from __future__ import annotations

import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from hal0_lemonade import report
from hal0_lemonade.errors import Hal0Error

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2
ROOT = click.Path(exists=True, file_okay=False, resolve_path=True, path_type=Path)
F = TypeVar("F", bound=Callable[..., Any])


def root_option(help_text: str = "Act on this directory as if it were /.") -> Callable[[F], F]:
    return click.option("--root", type=ROOT, default=Path("/"), show_default=True, help=help_text)


def json_option() -> Callable[[F], F]:
    return click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout.")


def step_numbering_options() -> Callable[[F], F]:
    """``--step-offset/--step-total``: an embedding installer keeps its outer ``[n/N]``."""

    def decorate(func: F) -> F:
        func = click.option(
            "--step-total",
            type=click.IntRange(min=1),
            default=None,
            help="Total step count of the embedding installer.",
        )(func)
        return click.option(
            "--step-offset",
            type=click.IntRange(min=0),
            default=0,
            help="Shift step numbers (when embedded in a larger installer).",
        )(func)

    return decorate


def guard(as_json: bool, debug: bool, body: Callable[[], int]) -> int:
    """Run a command body; turn every error into one line (or one JSON object) and a code."""
    try:
        return body()
    except Hal0Error as exc:
        if debug:
            traceback.print_exc()
        if as_json:
            doc = {"ok": False, "changed": False, "version": "", "steps": [], "error": None}
            doc["error"] = report.error_text(exc)
            report.dump_json(doc)
        else:
            report.HumanReporter().error(exc)
        return exc.exit_code
    except KeyboardInterrupt:
        sys.stderr.write("interrupted: the previous state is still live; re-run to converge\n")
        return EXIT_FAIL
