"""Human and JSON rendering of plans and results.  Nothing else in the package prints."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

from hal0_lemonade.errors import Hal0Error
from hal0_lemonade.plan import Result, Status, Step, StepResult

_WIDTH = 22


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

    def step_started(self, index: int, total: int, step: Step) -> None:
        for note in step.notes:
            self.err.write(f"warning: {note}\n")

    def step_finished(self, index: int, total: int, step: Step, result: StepResult) -> None:
        label = self.numbering.label(index, total)
        self.out.write(f"{label} {step.name:<{_WIDTH}} {result.status.value:<8} {result.detail}\n")
        self.out.flush()

    def plan(self, steps: Sequence[Step]) -> None:
        self.out.write("Dry run: nothing is changed. The install would do this:\n")
        for index, step in enumerate(steps, start=1):
            label = self.numbering.label(index, len(steps))
            if step.skip_reason:
                verdict, detail = "skipped", step.skip_reason
            elif step.actions:
                verdict, detail = "change", f"{len(step.actions)} action(s)"
            else:
                verdict, detail = "ok", step.ok_detail
            self.out.write(f"{label} {step.name:<{_WIDTH}} {verdict:<8} {detail}\n")
            for note in step.notes:
                self.out.write(f"      warning: {note}\n")
            if step.skip_reason:
                continue
            for action in step.actions:
                self.out.write(f"    - {action.summary}\n")
                if action.diff:
                    self.out.write(_indent(action.diff))

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
        where = f"[{exc.step}] " if exc.step else ""
        self.err.write(f"error: {where}{exc.message}\n")
        if exc.hint:
            self.err.write(f"hint: {exc.hint}\n")


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
            sys.stderr.write(f"warning: {note}\n")

    def step_finished(self, index: int, total: int, step: Step, result: StepResult) -> None:
        return None


def dump_json(doc: dict[str, Any], out: TextIO | None = None) -> None:
    stream = out or sys.stdout
    stream.write(json.dumps(doc) + "\n")
    stream.flush()
