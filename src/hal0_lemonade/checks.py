"""What ``status`` and ``doctor`` return: checks, each passed, failed or not applicable."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple


class Check(NamedTuple):
    name: str
    ok: bool | None  # None: does not apply here (e.g. no systemd under --root)
    detail: str
    hint: str = ""  # what to do when ok is False
    problems: tuple[str, ...] = ()  # every finding behind a shortened detail (JSON only)


@dataclass
class Report:
    """The checks of one ``status`` or ``doctor`` run, in reading order."""

    version: str | None  # the installed Lemonade version, when there is one
    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(c.ok is not False for c in self.checks)
