"""Plans, steps, actions, and the one applier that changes the host.

Every command that changes the host (install, rollback, uninstall) returns a :class:`Plan`: a
list of :class:`Step` objects, each a named list of :class:`Action` objects that say what they
would change (with a diff where there is one) and carry the recovery hint shown if they fail.
``--dry-run`` renders the plan and stops; :func:`apply` runs its steps in order.  A converged
host yields steps without actions.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

from hal0_lemonade.errors import Hal0Error
from hal0_lemonade.oserrors import explain

if TYPE_CHECKING:
    from hal0_lemonade.runner import CommandRunner


class Status(enum.StrEnum):
    OK = "ok"
    CHANGED = "changed"
    SKIPPED = "skipped"
    FAILED = "failed"


@dataclass
class Action:
    summary: str  # "write /etc/systemd/system/hal0-lemonade.service"
    run: Callable[[], str | None]  # performs the change; may return a detail line
    diff: str = ""


@dataclass
class Step:
    name: str
    actions: list[Action] = field(default_factory=list)
    ok_detail: str = ""  # what holds when there is nothing to do
    # Non-empty: the step's work does not apply (e.g. --no-start); its actions, if any, only
    # record that (the --no-start record status reads).
    skip_reason: str = ""
    hint: str = ""  # recovery hint for any failure in this step
    verify: Callable[[], str] | None = None  # runs after the actions; raises on failure
    notes: list[str] = field(default_factory=list)  # warnings shown with the step

    @property
    def changes(self) -> bool:
        return bool(self.actions)

    @property
    def skipped(self) -> bool:
        """Nothing at all to do or check: shown as 'skipped'."""
        return bool(self.skip_reason) and not self.actions


class StepResult(NamedTuple):
    name: str
    status: Status
    detail: str


@dataclass
class Result:
    version: str
    steps: list[StepResult] = field(default_factory=list)
    error: Hal0Error | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and all(s.status != Status.FAILED for s in self.steps)

    @property
    def changed(self) -> bool:
        return any(s.status == Status.CHANGED for s in self.steps)


def file_diff(old: bytes | None, new: bytes, old_label: str, new_label: str) -> str:
    """A unified diff of a file's current bytes (None: absent) against the desired ones."""
    import difflib  # ~2 ms to import; only the steps that write files need it

    before = (old or b"").decode("utf-8", "replace").splitlines(keepends=True)
    after = new.decode().splitlines(keepends=True)
    return "".join(difflib.unified_diff(before, after, old_label, new_label))


class Plan(NamedTuple):
    """What one changing command would do."""

    command: str  # "install", "rollback", "uninstall": how the renderer names it
    version: str  # the Lemonade version it is about
    steps: list[Step]
    # The closing line of a run that went through (say what changed, what was kept).
    summary: Callable[[Result], str] = lambda result: ""
    # More keys of the --json object (uninstall: what it kept).
    extra: Callable[[], dict[str, Any]] = dict
    # A step whose failure leaves everything before it done (install's service start): the
    # command then exits 3, which an embedding installer may take as a soft failure.
    soft_step: str | None = None


def command_action(
    summary: str, argv: list[str], runner: CommandRunner, *, timeout: float = 120
) -> Action:
    """An action that runs one host command (systemctl, useradd...) and shows it as its diff."""

    def run() -> str:
        runner.run(argv, timeout=timeout)
        return summary

    return Action(summary, run, diff="$ " + " ".join(argv) + "\n")


class Reporter(Protocol):
    def step_started(self, index: int, total: int, step: Step) -> None: ...

    def step_finished(self, index: int, total: int, step: Step, result: StepResult) -> None: ...


def apply(steps: Sequence[Step], version: str, reporter: Reporter) -> Result:
    """Run every step in order; stop at the first failure, naming its step."""
    result = Result(version)
    total = len(steps)
    for index, step in enumerate(steps, start=1):
        reporter.step_started(index, total, step)
        try:
            outcome = _run_step(step)
        except Hal0Error as exc:
            exc.step = exc.step or step.name
            exc.hint = exc.hint or step.hint
            outcome = StepResult(step.name, Status.FAILED, exc.message)
            result.error = exc
        except OSError as exc:
            error = explain(exc, step=step.name, hint=step.hint)
            outcome = StepResult(step.name, Status.FAILED, error.message)
            result.error = error
        result.steps.append(outcome)
        reporter.step_finished(index, total, step, outcome)
        if result.error is not None:
            break
    return result


def _run_step(step: Step) -> StepResult:
    if step.skipped:
        return StepResult(step.name, Status.SKIPPED, step.skip_reason)
    details: list[str] = [step.skip_reason]
    for action in step.actions:
        detail = action.run()
        details.append(detail or action.summary)
    if step.verify is not None and not step.skip_reason:
        details.append(step.verify())
    status = Status.CHANGED if step.actions else Status.OK
    text = "; ".join(d for d in details if d) or step.ok_detail
    return StepResult(step.name, status, text)
