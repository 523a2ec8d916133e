"""Command line: flags -> :class:`driver.Options` and a command; the driver does the rest.

Every command takes ``--root``, ``--json`` and ``--debug``; the ones that change the host
(install, rollback, uninstall) also take ``--dry-run`` and ``--step-offset/--step-total``, the
same way each.  A command's own module is imported only when it runs: an install need not pay
for doctor's imports.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import click

from hal0_lemonade import __version__, driver

F = TypeVar("F", bound=Callable[..., Any])
ROOT = click.Path(exists=True, file_okay=False, resolve_path=True, path_type=Path)

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

\b
Exit: 0 done; 1 a step failed; 2 a bad flag, variable or operator file; 3 everything is
installed but the service did not become active and healthy (the Service start step).
"""
STATUS_EXAMPLES = """
\b
Examples:
  hal0-lemonade status                        # exit 0 only when every check holds
  hal0-lemonade status --json                 # one JSON object, for scripts
  hal0-lemonade status --root /tmp/sandbox    # a sandbox install
"""
DOCTOR_EXAMPLES = """
\b
Examples:
  sudo hal0-lemonade doctor                 # check this host; exit 1 if anything fails
  sudo hal0-lemonade doctor --json | jq '.checks[] | select(.ok == false)'
  hal0-lemonade doctor --root /tmp/sandbox  # check a sandbox install
"""
ROLLBACK_EXAMPLES = """
\b
Examples:
  sudo hal0-lemonade rollback --dry-run   # which release would go live again
  sudo hal0-lemonade rollback             # swap it back live, restart, wait for health
  hal0-lemonade rollback --root /tmp/sandbox --json
"""
UNINSTALL_EXAMPLES = """
\b
Examples:
  sudo hal0-lemonade uninstall --dry-run    # show what would be removed
  sudo hal0-lemonade uninstall              # remove service, unit and release; keep state
  sudo hal0-lemonade uninstall --purge      # also remove /var/lib/hal0 and the hal0 account
"""
CONFIG_EXAMPLES = """
\b
Examples:
  hal0-lemonade config show                 # what install would enforce, and why
  hal0-lemonade config show --json
  HAL0_LEMONADE_PORT=13400 hal0-lemonade config show

\b
Operator file (/etc/hal0/lemonade.toml, optional):
  port = 13305
  threads = 6
  max_loaded_models = 2
  [llamacpp]
  backend = "vulkan"
  extra_args = "--no-mmap"
"""
EPILOG = """
\b
Shell completion (bash; zsh and fish likewise with zsh_source / fish_source):
  eval "$(_HAL0_LEMONADE_COMPLETE=bash_source hal0-lemonade)"
"""


def common(*, changes: bool) -> Callable[[F], F]:
    """The options every command shares, and those every changing command shares."""

    def decorate(func: F) -> F:
        if changes:
            func = click.option(
                "--step-total",
                type=click.IntRange(min=1),
                default=None,
                help="Total step count of the embedding installer.",
            )(func)
            func = click.option(
                "--step-offset",
                type=click.IntRange(min=0),
                default=0,
                help="Shift step numbers (when embedded in a larger installer).",
            )(func)
            func = click.option(
                "--dry-run", is_flag=True, help="Print the plan with diffs; change nothing."
            )(func)
        func = click.option("--debug", is_flag=True, help="Show tracebacks.")(func)
        func = click.option(
            "--json", "as_json", is_flag=True, help="Print one JSON object on stdout."
        )(func)
        return click.option(
            "--root",
            type=ROOT,
            default=Path("/"),
            show_default=True,
            help="Act on this directory as if it were /.",
        )(func)

    return decorate


def _options(opts: dict[str, Any], **more: Any) -> driver.Options:
    return driver.Options(
        root=opts["root"],
        as_json=opts["as_json"],
        debug=opts["debug"],
        dry_run=opts.get("dry_run", False),
        step_offset=opts.get("step_offset", 0),
        step_total=opts.get("step_total"),
        **more,
    )


def _print_version(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if not value or ctx.resilient_parsing:
        return
    from hal0_lemonade import inflate  # only when asked: zlib-ng's import is not free

    click.echo(f"hal0-lemonade, version {__version__} (inflate: {inflate.describe()})")
    ctx.exit()


@click.group(context_settings={"help_option_names": ["-h", "--help"]}, epilog=EPILOG)
@click.option(
    "--version",
    is_flag=True,
    expose_value=False,
    is_eager=True,
    callback=_print_version,
    help="Show the version, and which inflate (zlib-ng or the stdlib's) runs, and exit.",
)
def cli() -> None:
    """Install and check Lemonade Server (lemond) as the systemd service hal0-lemonade."""


@cli.command(epilog=INSTALL_EXAMPLES)
@common(changes=True)
@click.option(
    "--dev", "dev", is_flag=True, help="The same as --dry-run (DEV_MODE in hal0's installer)."
)
@click.option("--version", "version", metavar="VER", help="Lemonade release (default: pinned).")
@click.option(
    "--artifact", metavar="URL|PATH", help="Archive to install: http(s)/file URL or path."
)
@click.option("--sha256", metavar="HEX", help="Expected SHA-256 of the archive.")
@click.option(
    "--threads",
    type=click.IntRange(2, 1024),
    metavar="N",
    help="llama.cpp --threads (2..1024, like HAL0_LEMONADE_THREADS and the file).",
)
@click.option("--no-start", is_flag=True, help="Install files only; do not enable or start.")
@click.option(
    "--reinstall",
    is_flag=True,
    help="Re-extract the release from a verified archive even if it looks current "
    "(repairs files `doctor` reports as changed).",
)
@click.option(
    "--quiet", "-q", is_flag=True, help="No download progress; step lines and errors only."
)
def install(**opts: Any) -> int:
    """Install or converge Lemonade as the hal0-lemonade service."""
    from hal0_lemonade import install as install_cmd
    from hal0_lemonade.settings import Request

    request = Request(
        version=opts["version"],
        artifact=opts["artifact"],
        sha256=opts["sha256"],
        threads=opts["threads"],
        start=not opts["no_start"],
        reinstall=opts["reinstall"],
    )
    opts["dry_run"] = opts["dry_run"] or opts["dev"]
    options = _options(opts, quiet=opts["quiet"])
    return driver.execute(install_cmd.command(request), options, changes=True)


@cli.command(epilog=ROLLBACK_EXAMPLES)
@common(changes=True)
def rollback(**opts: Any) -> int:
    """Switch back to the previous Lemonade release (and its config) and restart."""
    from hal0_lemonade import rollback as rollback_cmd

    return driver.execute(rollback_cmd.command, _options(opts), changes=True)


@cli.command(epilog=UNINSTALL_EXAMPLES)
@common(changes=True)
@click.option("--purge", is_flag=True, help="Also remove /var/lib/hal0 and the hal0 account.")
def uninstall(**opts: Any) -> int:
    """Stop and remove the hal0-lemonade service and the Lemonade release."""
    from hal0_lemonade import uninstall as uninstall_cmd

    build = uninstall_cmd.command(purge=opts["purge"])
    return driver.execute(build, _options(opts), changes=True)


@cli.command(epilog=STATUS_EXAMPLES)
@common(changes=False)
def status(**opts: Any) -> int:
    """Report what is installed; exit 0 only when every check holds."""
    from hal0_lemonade import status as status_cmd

    return driver.execute(status_cmd.command, _options(opts), changes=False)


@cli.command(epilog=DOCTOR_EXAMPLES)
@common(changes=False)
@click.option(
    "--dev-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    hidden=True,  # a seam for tests: where the GPU nodes are (default: ROOT/dev)
)
def doctor(**opts: Any) -> int:
    """Check everything, deeply; print each check with a hint; exit 1 when any fails."""
    from hal0_lemonade import doctor as doctor_cmd

    return driver.execute(doctor_cmd.command(opts["dev_dir"]), _options(opts), changes=False)


@cli.group("config")
def config_group() -> None:
    """Show the effective configuration (operator file: /etc/hal0/lemonade.toml)."""


@config_group.command("show", epilog=CONFIG_EXAMPLES)
@common(changes=False)
def config_show(**opts: Any) -> int:
    """Print the config.json values install enforces and where each comes from."""
    from hal0_lemonade import config_cmd

    return driver.execute(config_cmd.command, _options(opts), changes=False)


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
        return driver.EXIT_FAIL
    return rv if isinstance(rv, int) else driver.EXIT_OK
