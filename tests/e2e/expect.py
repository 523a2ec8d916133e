"""Assertions shared by the e2e scenarios: the CLI's JSON contract and installed state."""

from __future__ import annotations

from typing import Any

import pytest

from tests.e2e.harness import CONFIG, MARKER, UNIT, Container
from tests.support.archives import Release

STEP_STATUSES = frozenset({"ok", "changed", "skipped", "failed"})


def assert_result_shape(result: dict[str, Any]) -> None:
    """``--json`` prints {ok, changed, version, steps: [{name, status, detail}], error}."""
    assert set(result) >= {"ok", "changed", "version", "steps", "error"}, result
    assert isinstance(result["ok"], bool), result
    assert isinstance(result["changed"], bool), result
    assert isinstance(result["version"], str), result
    assert result["error"] is None or isinstance(result["error"], str), result
    assert isinstance(result["steps"], list), result
    for step in result["steps"]:
        assert set(step) >= {"name", "status", "detail"}, step
        assert step["status"] in STEP_STATUSES, step


def steps_by_status(result: dict[str, Any]) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for step in result["steps"]:
        found.setdefault(step["status"], []).append(step["name"])
    return found


def assert_marker(c: Container, release: Release) -> None:
    """The live tree's marker names the release (first line; a recorded digest must match)."""
    lines = c.read(MARKER).splitlines()
    assert lines, "empty marker"
    assert lines[0].strip() == release.version, lines
    digests = [line.split("=", 1)[1] for line in lines if line.startswith("sha256=")]
    assert digests in ([], [release.sha256]), lines


def llamacpp_args(c: Container) -> str:
    config = c.read_json(CONFIG)
    args = config["llamacpp"]["args"]
    assert isinstance(args, str), config
    return args


def require_active(c: Container) -> int:
    """A scenario's precondition: the service runs. Returns its MainPID."""
    state = c.show("ActiveState")
    if state != "active":
        pytest.fail(f"precondition: {UNIT} is {state}; an earlier scenario left it so")
    pid = c.main_pid()
    assert pid > 0
    return pid
