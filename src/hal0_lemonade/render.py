"""The one place that prints: every command's outcome, for a person or as one JSON object.

A command's outcome is a :class:`plan.Plan` (install, rollback, uninstall: shown as a dry run,
or as numbered step lines while it applies, then one closing line), a :class:`checks.Report`
(status, doctor), a :class:`Listing` (config show), or an error.  :class:`Human` and
:class:`Json` render each of them; :mod:`hal0_lemonade.driver` picks one per run.  Everything
another party may have written (a config diff, a health answer, a command line) is escaped
on its way to the terminal (:mod:`hal0_lemonade.termsafe`).
"""

from __future__ import annotations

import json
import sys
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol, TextIO

from hal0_lemonade.checks import Report
from hal0_lemonade.errors import Hal0Error
from hal0_lemonade.plan import Plan, Result, Status, Step, StepResult
from hal0_lemonade.progress import Progress, use_color
from hal0_lemonade.termsafe import escape, escape_block

_WIDTH = 22
_COLORS = {"ok": "green", "changed": "yellow", "skipped": "blue", "failed": "red"}
_MARKS = {True: ("PASS", "green"), False: ("FAIL", "red"), None: ("n/a ", "blue")}


def paint(text: str, color: str, *, enabled: bool) -> str:
    if not enabled:
        return text
    import click  # the CLI has it loaded already; styling is all it is used for here

    return click.style(text, fg=color, bold=True if color == "red" else None)


def _indent(text: str, prefix: str = "      ") -> str:
    return "".join(prefix + line + "\n" for line in text.rstrip("\n").splitlines())


class Numbering(NamedTuple):
    """``[n/N]``: N comes from the step list; a caller embedding us may shift both."""

    offset: int = 0
    total: int | None = None

    def label(self, index: int, count: int) -> str:
        return f"[{index + self.offset}/{self.total or count + self.offset}]"


class Listing(NamedTuple):
    """A table of values (``config show``): rows for a person, an object for JSON."""

    rows: list[tuple[str, ...]]
    document: dict[str, Any]
    heading: str = ""


class Renderer(Protocol):
    def step_started(self, index: int, total: int, step: Step) -> None: ...

    def step_finished(self, index: int, total: int, step: Step, result: StepResult) -> None: ...

    def plan(self, plan: Plan) -> None: ...

    def result(self, plan: Plan, result: Result) -> None: ...

    def report(self, report: Report) -> None: ...

    def listing(self, listing: Listing) -> None: ...

    def error(self, exc: Hal0Error, *, debug: bool = False) -> None: ...


def error_text(exc: Hal0Error) -> str:
    text = f"[{exc.step}] {exc.message}" if exc.step else exc.message
    return f"{text} (hint: {exc.hint})" if exc.hint else text


def _traceback(exc: BaseException, err: TextIO) -> None:
    err.write("".join(traceback.format_exception(exc)))


@dataclass
class Human:
    """Numbered step lines, PASS/FAIL lines, one closing line; warnings and errors on stderr."""

    out: TextIO = field(default_factory=lambda: sys.stdout)
    err: TextIO = field(default_factory=lambda: sys.stderr)
    numbering: Numbering = field(default_factory=Numbering)
    progress: Progress | None = None  # the download bar, closed before each line
    color: bool | None = None  # None: colour when ``out`` is a terminal and NO_COLOR unset

    def __post_init__(self) -> None:
        if self.color is None:
            self.color = use_color(self.out)

    def _line(self, text: str, stream: TextIO | None = None) -> None:
        if self.progress is not None:
            self.progress.end()
        target = stream or self.out
        target.write(text + "\n")
        target.flush()

    # -- a plan being applied ---------------------------------------------------------------
    def step_started(self, index: int, total: int, step: Step) -> None:
        for note in step.notes:
            self._line(f"warning: {escape(note)}", self.err)

    def step_finished(self, index: int, total: int, step: Step, result: StepResult) -> None:
        label = self.numbering.label(index, total)
        word = result.status.value
        verdict = paint(f"{word:<8}", _COLORS[word], enabled=bool(self.color))
        self._line(f"{label} {step.name:<{_WIDTH}} {verdict} {escape(result.detail)}")

    def result(self, plan: Plan, result: Result) -> None:
        if result.error is not None:
            if result.error.step:  # its step line already said what failed: the hint only
                if result.error.hint:
                    self._line(f"hint: {escape(result.error.hint)}", self.err)
            else:
                self.error(result.error)
            return
        self._line(plan.summary(result) or _summary(plan, result))

    # -- a dry run ----------------------------------------------------------------------------
    def plan(self, plan: Plan) -> None:
        self._line(f"Dry run: nothing is changed. The {plan.command} would do this:")
        for index, step in enumerate(plan.steps, start=1):
            label = self.numbering.label(index, len(plan.steps))
            if step.skipped:
                verdict, detail = "skipped", step.skip_reason
            elif step.actions:
                verdict, detail = "change", f"{len(step.actions)} action(s)"
            else:
                verdict, detail = "ok", step.ok_detail
            self._line(f"{label} {step.name:<{_WIDTH}} {verdict:<8} {escape(detail)}")
            for note in step.notes:
                self._line(f"      warning: {escape(note)}")
            for action in step.actions:
                self._line(f"    - {escape(action.summary)}")
                if action.diff:
                    # A diff of config.json shows bytes hal0 wrote: escaped, line by line.
                    self.out.write(_indent(escape_block(action.diff)))

    # -- checks -------------------------------------------------------------------------------
    def report(self, report: Report) -> None:
        checks = report.checks
        width = max((len(c.name) for c in checks), default=0)
        for check in checks:
            word, hue = _MARKS[check.ok]
            mark = paint(word, hue, enabled=bool(self.color))
            self._line(f"{mark} {check.name:<{width}}  {escape(check.detail)}")
            if check.ok is False and check.hint:
                self._line(f"     {'':<{width}}  hint: {escape(check.hint)}")
        failed = sum(c.ok is False for c in checks)
        na = sum(c.ok is None for c in checks)
        self._line(
            f"{failed} of {len(checks)} checks failed"
            if failed
            else f"all {len(checks) - na} applicable checks pass" + (f" ({na} n/a)" if na else "")
        )

    def listing(self, listing: Listing) -> None:
        if listing.heading:
            self._line(escape(listing.heading))
        widths = [max(len(row[i]) for row in listing.rows) for i in range(len(listing.rows[0]))]
        widths[1:-1] = [min(40, w) for w in widths[1:-1]]
        for row in listing.rows:
            cells = [f"{cell:<{w}}" for cell, w in zip(row[:-1], widths, strict=False)]
            self._line(escape("  ".join([*cells, row[-1]])))

    def error(self, exc: Hal0Error, *, debug: bool = False) -> None:
        if debug:
            _traceback(exc, self.err)
        where = f"[{exc.step}] " if exc.step else ""
        self._line(f"error: {where}{escape(exc.message)}", self.err)
        if exc.hint:
            self._line(f"hint: {escape(exc.hint)}", self.err)


def _summary(plan: Plan, result: Result) -> str:
    changed = sum(s.status == Status.CHANGED for s in result.steps)
    word = "changed" if changed else "no changes"
    return f"Lemonade {plan.version}: {word} ({changed} step(s) changed)"


@dataclass
class Json:
    """Exactly one JSON object on stdout; warnings on stderr."""

    out: TextIO = field(default_factory=lambda: sys.stdout)
    err: TextIO = field(default_factory=lambda: sys.stderr)

    def _dump(self, doc: dict[str, Any]) -> None:
        self.out.write(json.dumps(doc) + "\n")
        self.out.flush()

    def step_started(self, index: int, total: int, step: Step) -> None:
        for note in step.notes:
            self.err.write(f"warning: {escape(note)}\n")

    def step_finished(self, index: int, total: int, step: Step, result: StepResult) -> None:
        return None

    def result(self, plan: Plan, result: Result) -> None:
        self._dump({**result_json(result), **plan.extra()})

    def plan(self, plan: Plan) -> None:
        self._dump({**result_json(plan_result(plan), plan.steps), **plan.extra()})

    def report(self, report: Report) -> None:
        self._dump(
            {
                "ok": report.ok,
                "version": report.version,
                "checks": [
                    {
                        "name": c.name,
                        "ok": c.ok,
                        "detail": c.detail,
                        "hint": c.hint if c.ok is False else "",
                        **({"problems": list(c.problems)} if c.problems else {}),
                    }
                    for c in report.checks
                ],
            }
        )

    def listing(self, listing: Listing) -> None:
        self._dump(listing.document)

    def error(self, exc: Hal0Error, *, debug: bool = False) -> None:
        if debug:
            _traceback(exc, self.err)
        self._dump(
            {"ok": False, "changed": False, "version": "", "steps": [], "error": error_text(exc)}
        )


def result_json(result: Result, steps: Sequence[Step] | None = None) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "ok": result.ok,
        "changed": result.changed,
        "version": result.version,
        "steps": [
            {"name": s.name, "status": s.status.value, "detail": s.detail} for s in result.steps
        ],
        "error": error_text(result.error) if result.error is not None else None,
    }
    if steps is not None:  # a dry run: say what each step would do
        doc["dry_run"] = True
        for entry, step in zip(doc["steps"], steps, strict=True):
            entry["actions"] = [a.summary for a in step.actions]
    return doc


def plan_result(plan: Plan) -> Result:
    """The Result a dry run reports: 'changed' for steps that would change."""
    result = Result(plan.version)
    for step in plan.steps:
        if step.skipped:
            result.steps.append(StepResult(step.name, Status.SKIPPED, step.skip_reason))
        elif step.actions:
            detail = "would: " + "; ".join(a.summary for a in step.actions)
            result.steps.append(StepResult(step.name, Status.CHANGED, detail))
        else:
            result.steps.append(StepResult(step.name, Status.OK, step.ok_detail))
    return result


def json_value(value: Any) -> str:
    """A config value as the operator would write it: strings bare, the rest as JSON."""
    return value if isinstance(value, str) else json.dumps(value)


Build = Callable[[], Plan | Report | Listing]
