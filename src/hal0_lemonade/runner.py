"""The one seam through which the installer runs host commands (useradd, systemctl, ...)."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from hal0_lemonade.errors import CommandError


@dataclass(frozen=True)
class CommandResult:
    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str


class CommandRunner(Protocol):
    def run(
        self, argv: Sequence[str], *, check: bool = True, timeout: float = 60.0
    ) -> CommandResult: ...


class SubprocessRunner:
    """Runs commands for real, with a C locale so their output parses the same everywhere."""

    def run(
        self, argv: Sequence[str], *, check: bool = True, timeout: float = 60.0
    ) -> CommandResult:
        args = tuple(argv)
        try:
            done = subprocess.run(
                args,
                check=False,  # checked below, with a message that names the command
                capture_output=True,
                text=True,
                timeout=timeout,
                env={"LC_ALL": "C", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "SYSTEMD_PAGER": ""},
            )
        except FileNotFoundError as exc:
            raise CommandError(
                f"{args[0]} is not installed", hint=f"install the package that provides {args[0]}"
            ) from exc
        except subprocess.TimeoutExpired as exc:
            raise CommandError(f"`{' '.join(args)}` did not finish within {timeout:g} s") from exc
        result = CommandResult(args, done.returncode, done.stdout, done.stderr)
        if check and done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
            raise CommandError(f"`{' '.join(args)}` failed ({done.returncode}): {tail[0]}")
        return result
