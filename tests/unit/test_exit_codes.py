"""install's exit codes: a failure in the plan's soft step (install: Service start) exits 3,
so that an embedding installer can tell "installed, the service is down" from a failed
install; a failure anywhere before it exits 1.  (A booted host shows the same through the
real command: tests/e2e/test_failed_start.py.)"""

from __future__ import annotations

import io
import json

import pytest

from hal0_lemonade import driver, render
from hal0_lemonade.errors import Hal0Error, ServiceError
from hal0_lemonade.plan import Action, Plan, Step


def _fails(error: Hal0Error) -> Step:
    def verify() -> str:
        raise error

    step = Step(error.step or "", verify=verify)
    error.step = ""  # apply() names the failing step itself
    return step


def _run(steps: list[Step], soft: str | None) -> tuple[int, dict[str, object]]:
    out = io.StringIO()
    code = driver._apply(Plan("install", "10.6.0", steps, soft_step=soft), render.Json(out=out))
    return code, json.loads(out.getvalue())


def _ok(name: str) -> Step:
    return Step(name, actions=[Action("write", lambda: "wrote")])


@pytest.mark.parametrize(
    ("failing", "code"),
    [("Service start", driver.EXIT_SOFT), ("Daemon config", driver.EXIT_FAIL)],
)
def test_only_the_soft_step_exits_3(failing: str, code: int) -> None:
    names = ["Lemonade release", "Daemon config", "Service start"]
    error = ServiceError("lemond did not answer", step=failing)
    steps = [_fails(error) if name == failing else _ok(name) for name in names]
    got, doc = _run(steps, soft="Service start")
    assert got == code
    assert doc["ok"] is False and str(doc["error"]).startswith(f"[{failing}] ")


def test_a_plan_without_a_soft_step_exits_1() -> None:
    got, _ = _run([_fails(ServiceError("down", step="Service start"))], soft=None)
    assert got == driver.EXIT_FAIL


def test_success_exits_0() -> None:
    assert _run([_ok("Service start")], soft="Service start")[0] == driver.EXIT_OK
