"""Command line: flags -> Settings -> plan -> apply or print; one place maps errors to exits."""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, cast

import click

from hal0_lemonade import __version__, engine, plan, progress, report, settings, termsafe
from hal0_lemonade.clikit import (
    EXIT_FAIL,
    EXIT_OK,
    guard,
    json_option,
    root_option,
    step_numbering_options,
)
from hal0_lemonade.errors import Hal0Error, UsageError
from hal0_lemonade.layout import Layout
from hal0_lemonade.runner import SubprocessRunner

INSTALL_EXAMPLES = """
\b
Examples:
  sudo hal0-lemonade install                  # the pinned release, started and healthy
  sudo hal0-lemonade install --dry-run        # show the plan with diffs, change nothing
  hal0-lemonade install --root /tmp/sandbox --artifact ./lemonade.tar.gz \\
      --sha256 <hex> --no-start               # a sandbox install from a local archive
  sudo hal0-lemonade install --quiet          # step lines only, no download progress
  hal0-lemonade install --step-offset 4 --step-total 10   # numbered [5/10].. inside hal0

\b
Values not given as flags come from HAL0_LEMONADE_THREADS / HAL0_LEMONADE_PORT, then
/etc/hal0/lemonade.toml, then the pins (see `hal0-lemonade config show`).
"""

STATUS_EXAMPLES = """
\b
Examples:
  hal0-lemonade status                        # exit 0 only when every check holds
  hal0-lemonade status --json                 # one JSON object, for scripts
  hal0-lemonade status --root /tmp/sandbox    # a sandbox install
"""

CLI_EPILOG = """
\b
Shell completion (bash; zsh and fish likewise with zsh_source / fish_source):
  eval "$(_HAL0_LEMONADE_COMPLETE=bash_source hal0-lemonade)"
"""


def _http_timeout() -> float:
    raw = os.environ.get("HAL0_LEMONADE_HTTP_TIMEOUT", "").strip()
    if not raw:
        return 30.0
    try:
        value = float(raw)
    except ValueError:
        value = 0.0
    if not 0 < value <= 3600:
        raise UsageError(
            f"HAL0_LEMONADE_HTTP_TIMEOUT={raw!r} is not a number of seconds in (0, 3600]"
        )
    return value


def _http_deadline() -> float:
    raw = os.environ.get("HAL0_LEMONADE_HTTP_DEADLINE", "").strip()
    if not raw:
        return 1800.0
    try:
        value = float(raw)
    except ValueError:
        value = 0.0
    if not 0 < value <= 86400:
        raise UsageError(
            f"HAL0_LEMONADE_HTTP_DEADLINE={raw!r} is not a number of seconds in (0, 86400]"
        )
    return value


# Subcommands that live in their own modules, imported only when one of them runs (or --help
# lists them): an install need not pay for doctor's, config's or uninstall's imports.
_ELSEWHERE = {
    "rollback": ("hal0_lemonade.rollback", "rollback_cmd"),
    "doctor": ("hal0_lemonade.doctor", "command"),
    "uninstall": ("hal0_lemonade.uninstall", "command"),
    "config": ("hal0_lemonade.config_cmd", "group"),
}


class _Commands(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), *_ELSEWHERE])

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in _ELSEWHERE:
            module, attr = _ELSEWHERE[cmd_name]
            return cast(click.Command, getattr(importlib.import_module(module), attr))
        return super().get_command(ctx, cmd_name)


@click.group(
    cls=_Commands,
    context_settings={"help_option_names": ["-h", "--help"]},
    epilog=CLI_EPILOG,
)
@click.version_option(__version__, prog_name="hal0-lemonade")
def cli() -> None:
    """Install and check Lemonade Server (lemond) as the systemd service hal0-lemonade."""


@cli.command(epilog=INSTALL_EXAMPLES)
@root_option()
@click.option("--version", "version", metavar="VER", help="Lemonade release (default: pinned).")
@click.option(
    "--artifact", metavar="URL|PATH", help="Archive to install: http(s)/file URL or path."
)
@click.option("--sha256", metavar="HEX", help="Expected SHA-256 of the archive.")
@click.option("--threads", type=int, metavar="N", help="llama.cpp --threads (>= 2).")
@click.option(
    "--dry-run", "--dev", "dry_run", is_flag=True, help="Print the plan with diffs; change nothing."
)
@click.option("--no-start", is_flag=True, help="Install files only; do not enable or start.")
@click.option(
    "--reinstall",
    is_flag=True,
    help="Re-extract the release from a verified archive even if it looks current "
    "(repairs files `doctor` reports as changed).",
)
@json_option()
@click.option(
    "--quiet", "-q", is_flag=True, help="No download progress; step lines and errors only."
)
@click.option("--debug", is_flag=True, help="Show tracebacks.")
@step_numbering_options()
def install(**opts: Any) -> int:
    """Install or converge Lemonade as the hal0-lemonade service."""
    return guard(opts["as_json"], opts["debug"], lambda: _under_umask_022(lambda: _install(**opts)))


def _under_umask_022(body: Callable[[], int]) -> int:
    """Every path is created with an explicit mode; a restrictive umask (077 in a hardened root
    shell) must not leave /opt/lemonade.releases or its dirs untraversable by hal0."""
    umask = os.umask(0o022)
    try:
        return body()
    finally:
        os.umask(umask)


def _install(
    *,
    root: Path,
    version: str | None,
    artifact: str | None,
    sha256: str | None,
    threads: int | None,
    dry_run: bool,
    no_start: bool,
    reinstall: bool,
    as_json: bool,
    quiet: bool,
    debug: bool,
    step_offset: int,
    step_total: int | None,
) -> int:
    del debug  # handled by guard()
    http_timeout = _http_timeout()  # a malformed value is a usage error before any work
    http_deadline = _http_deadline()
    wanted = settings.build(
        root=root,
        version=version,
        artifact=artifact,
        sha256=sha256,
        threads=threads,
        dry_run=dry_run,
        start=not no_start,
        reinstall=reinstall,
    )
    layout = wanted.layout
    if not dry_run and layout.is_host_root and os.geteuid() != 0:
        raise Hal0Error(
            "installing to / needs root privileges",
            hint="run it with sudo, or use --dry-run to see the plan, or --root DIR",
        )
    runner = SubprocessRunner()
    numbering = report.Numbering(step_offset, step_total)
    bar = progress.for_stream(sys.stderr, f"Lemonade {wanted.pin.version}", quiet=quiet or as_json)
    human = report.HumanReporter(numbering=numbering, progress=bar)
    reporter: plan.Reporter = report.QuietReporter() if as_json else human

    if dry_run:
        steps = engine.build_steps(wanted, runner, http_timeout=http_timeout)
        if as_json:
            report.dump_json(
                report.result_json(report.plan_result(steps, wanted.pin.version), steps)
            )
        else:
            human.plan(steps)
        return EXIT_OK

    with engine.install_lock(layout):
        steps = engine.build_steps(
            wanted, runner, progress=bar, http_timeout=http_timeout, http_deadline=http_deadline
        )
        result = plan.apply(steps, wanted.pin.version, reporter)
    if as_json:
        report.dump_json(report.result_json(result))
    else:
        human.finish(result)
    return EXIT_OK if result.ok else EXIT_FAIL


@cli.command("status", epilog=STATUS_EXAMPLES)
@root_option("Inspect this directory as if it were /.")
@json_option()
def status_cmd(root: Path, as_json: bool) -> int:
    """Report what is installed; exit 0 only when every check holds."""

    from hal0_lemonade import status  # only this command needs it

    def body() -> int:
        version, checks = status.collect(Layout(root), SubprocessRunner())
        ok = all(c.ok is not False for c in checks)
        if as_json:
            report.dump_json(
                {
                    "ok": ok,
                    "version": version,
                    "checks": [{"name": c.name, "ok": c.ok, "detail": c.detail} for c in checks],
                }
            )
        else:
            for c in checks:
                mark = {True: "ok  ", False: "FAIL", None: "n/a "}[c.ok]
                click.echo(f"{mark} {c.name:<8} {termsafe.escape(c.detail)}")
        return EXIT_OK if ok else EXIT_FAIL

    return guard(as_json, False, body)


def main(argv: Sequence[str] | None = None) -> int:
    try:
        rv = cli.main(
            args=list(argv) if argv is not None else None,
            prog_name="hal0-lemonade",
            standalone_mode=False,
        )
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except click.Abort:
        sys.stderr.write("aborted\n")
        return EXIT_FAIL
    return rv if isinstance(rv, int) else EXIT_OK
