"""Human and JSON rendering of plans and results.  Nothing else in the package prints."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TextIO

import click

from hal0_lemonade.errors import Hal0Error
from hal0_lemonade.plan import Result, Status, Step, StepResult
from hal0_lemonade.progress import Progress, use_color
from hal0_lemonade.termsafe import escape, escape_block

if TYPE_CHECKING:
    from hal0_lemonade.status import Check

_WIDTH = 22
_COLORS = {"ok": "green", "changed": "yellow", "skipped": "blue", "failed": "red"}


def paint(text: str, color: str, *, enabled: bool) -> str:
    return click.style(text, fg=color, bold=True if color == "red" else None) if enabled else text


def _indent(text: str, prefix: str = "      ") -> str:
    return "".join(prefix + line + "\n" for line in text.rstrip("\n").splitlines())


@dataclass
class Numbering:
    """``[n/N]``: N comes from the step list; a caller embedding us may shift both."""

    offset: int = 0
    total: int | None = None

    def label(self, index: int, count: int) -> str:
        return f"[{index + self.offset}/{self.total or count + self.offset}]"


@dataclass
class HumanReporter:
    out: TextIO = field(default_factory=lambda: sys.stdout)
    err: TextIO = field(default_factory=lambda: sys.stderr)
    numbering: Numbering = field(default_factory=Numbering)
    progress: Progress | None = None  # the download bar, closed before each step line
    color: bool | None = None  # None: colour when ``out`` is a terminal and NO_COLOR unset

    def __post_init__(self) -> None:
        if self.color is None:
            self.color = use_color(self.out)

    def step_started(self, index: int, total: int, step: Step) -> None:
        for note in step.notes:
            self.err.write(f"warning: {escape(note)}\n")

    def step_finished(self, index: int, total: int, step: Step, result: StepResult) -> None:
        if self.progress is not None:
            self.progress.end()
        label = self.numbering.label(index, total)
        word = result.status.value
        verdict = paint(f"{word:<8}", _COLORS[word], enabled=bool(self.color))
        self.out.write(f"{label} {step.name:<{_WIDTH}} {verdict} {escape(result.detail)}\n")
        self.out.flush()

    def plan(self, steps: Sequence[Step], *, command: str = "install") -> None:
        self.out.write(f"Dry run: nothing is changed. The {command} would do this:\n")
        for index, step in enumerate(steps, start=1):
            label = self.numbering.label(index, len(steps))
            if step.skip_reason:
                verdict, detail = "skipped", step.skip_reason
            elif step.actions:
                verdict, detail = "change", f"{len(step.actions)} action(s)"
            else:
                verdict, detail = "ok", step.ok_detail
            self.out.write(f"{label} {step.name:<{_WIDTH}} {verdict:<8} {escape(detail)}\n")
            for note in step.notes:
                self.out.write(f"      warning: {escape(note)}\n")
            if step.skip_reason:
                continue
            for action in step.actions:
                self.out.write(f"    - {escape(action.summary)}\n")
                if action.diff:
                    # A diff of config.json shows bytes hal0 wrote: escaped, line by line.
                    self.out.write(_indent(escape_block(action.diff)))

    def finish(self, result: Result, *, dry_run: bool = False) -> None:
        if result.error is not None:
            self.error(result.error)
            return
        if dry_run:
            return
        changed = sum(s.status == Status.CHANGED for s in result.steps)
        self.out.write(
            f"Lemonade {result.version}: {'changed' if changed else 'no changes'} "
            f"({changed} step(s) changed)\n"
        )

    def error(self, exc: Hal0Error) -> None:
        if self.progress is not None:
            self.progress.end()
        where = f"[{exc.step}] " if exc.step else ""
        self.err.write(f"error: {where}{escape(exc.message)}\n")
        if exc.hint:
            self.err.write(f"hint: {escape(exc.hint)}\n")


def result_json(result: Result, steps: Sequence[Step] | None = None) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "ok": result.ok,
        "changed": result.changed,
        "version": result.version,
        "steps": [
            {"name": s.name, "status": s.status.value, "detail": s.detail} for s in result.steps
        ],
        "error": error_text(result.error),
    }
    if steps is not None:  # a dry run: say what each step would do
        doc["dry_run"] = True
        for entry, step in zip(doc["steps"], steps, strict=True):
            entry["actions"] = [a.summary for a in step.actions if not step.skip_reason]
    return doc


def error_text(exc: Hal0Error | None) -> str | None:
    if exc is None:
        return None
    text = f"[{exc.step}] {exc.message}" if exc.step else exc.message
    return f"{text} (hint: {exc.hint})" if exc.hint else text


def plan_result(steps: Sequence[Step], version: str) -> Result:
    """The Result a dry run reports: 'changed' for steps that would change."""
    result = Result(version)
    for step in steps:
        if step.skip_reason:
            result.steps.append(StepResult(step.name, Status.SKIPPED, step.skip_reason))
        elif step.actions:
            detail = "would: " + "; ".join(a.summary for a in step.actions)
            result.steps.append(StepResult(step.name, Status.CHANGED, detail))
        else:
            result.steps.append(StepResult(step.name, Status.OK, step.ok_detail))
    return result


class QuietReporter:
    """Collects nothing and prints nothing: --json prints one object at the end."""

    def step_started(self, index: int, total: int, step: Step) -> None:
        for note in step.notes:
            sys.stderr.write(f"warning: {escape(note)}\n")

    def step_finished(self, index: int, total: int, step: Step, result: StepResult) -> None:
        return None


def json_value(value: Any) -> str:
    """A config value as the operator would write it: strings bare, the rest as JSON."""
    return value if isinstance(value, str) else json.dumps(value)


def dump_json(doc: dict[str, Any], out: TextIO | None = None) -> None:
    stream = out or sys.stdout
    stream.write(json.dumps(doc) + "\n")
    stream.flush()


_MARKS = {True: ("PASS", "green"), False: ("FAIL", "red"), None: ("n/a ", "blue")}


def print_checks(checks: Sequence[Check], out: TextIO | None = None) -> None:
    """One line per check (``PASS``/``FAIL``/``n/a``), the hint under each failure."""
    stream = out or sys.stdout
    color = use_color(stream)
    width = max((len(c.name) for c in checks), default=0)
    for check in checks:
        word, hue = _MARKS[check.ok]
        mark = paint(word, hue, enabled=color)
        stream.write(f"{mark} {check.name:<{width}}  {escape(check.detail)}\n")
        if check.ok is False and check.hint:
            stream.write(f"     {'':<{width}}  hint: {escape(check.hint)}\n")
    failed = sum(c.ok is False for c in checks)
    na = sum(c.ok is None for c in checks)
    summary = (
        f"{failed} of {len(checks)} checks failed"
        if failed
        else f"all {len(checks) - na} applicable checks pass" + (f" ({na} n/a)" if na else "")
    )
    stream.write(summary + "\n")
    stream.flush()


def checks_json(
    ok: bool, version: str | None, checks: Sequence[Check], details: dict[str, list[str]]
) -> dict[str, Any]:
    return {
        "ok": ok,
        "version": version,
        "checks": [
            {
                "name": c.name,
                "ok": c.ok,
                "detail": c.detail,
                "hint": c.hint if c.ok is False else "",
                **({"problems": details[c.name]} if c.name in details else {}),
            }
            for c in checks
        ],
    }
