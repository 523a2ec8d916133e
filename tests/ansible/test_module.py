"""The role's module on its own: command line and result mapping, without a playbook."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tests.ansible.conftest import ANSIBLE_DIR, HOST_PYTHON

pytestmark = pytest.mark.ansible

MODULE_PATH = ANSIBLE_DIR / "roles" / "hal0_lemonade" / "library" / "hal0_lemonade_install.py"


@pytest.fixture(scope="module")
def module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("hal0_lemonade_install", MODULE_PATH)
    assert spec is not None
    assert spec.loader is not None
    loaded = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(loaded)
    return loaded


PARAMS: dict[str, Any] = {
    "executable": "/usr/local/sbin/hal0-lemonade",
    "interpreter": "/usr/bin/python3",
    "root": "/srv/root",
    "version": None,
    "artifact": None,
    "sha256": None,
    "threads": None,
    "start": True,
}


def test_argv_passes_only_what_is_set(module: ModuleType) -> None:
    argv = module.build_argv(PARAMS, False)
    assert argv == [
        "/usr/bin/python3",
        PARAMS["executable"],
        "install",
        "--json",
        "--root",
        "/srv/root",
    ]
    # No interpreter: the executable runs by its own shebang.
    argv = module.build_argv({**PARAMS, "interpreter": ""}, False)
    assert argv == [PARAMS["executable"], "install", "--json", "--root", "/srv/root"]
    params = {
        **PARAMS,
        "version": "10.6.1",
        "artifact": "/var/cache/a.tar.gz",
        "sha256": "ab" * 32,
        "threads": 6,
        "start": False,
    }
    assert module.build_argv(params, True)[6:] == [
        "--version", "10.6.1", "--artifact", "/var/cache/a.tar.gz", "--sha256", "ab" * 32,
        "--threads", "6", "--no-start", "--dry-run",
    ]  # fmt: skip


def _doc(**fields: Any) -> str:
    doc = {"ok": True, "changed": False, "version": "10.6.0", "steps": [], "error": None}
    return json.dumps({**doc, **fields})


def test_success_maps_changed_exactly(module: ModuleType) -> None:
    steps = [
        {"name": "Lemonade release", "status": "ok", "detail": "installed"},
        {"name": "Daemon config", "status": "changed", "detail": "wrote"},
    ]
    failed, result = module.interpret(0, _doc(changed=True, steps=steps), "", dry_run=False)
    assert not failed
    assert result["changed"] is True
    assert result["msg"] == "Lemonade 10.6.0: changed: Daemon config"
    failed, result = module.interpret(0, _doc(), "", dry_run=False)
    assert (failed, result["changed"], result["msg"]) == (
        False,
        False,
        "Lemonade 10.6.0: no changes",
    )


def test_dry_run_lists_actions(module: ModuleType) -> None:
    steps = [
        {"name": "systemd unit", "status": "changed", "detail": "would: write", "actions": ["a"]},
        {"name": "Service start", "status": "changed", "detail": "", "actions": ["b", "c"]},
    ]
    doc = _doc(changed=True, steps=steps, dry_run=True)
    failed, result = module.interpret(0, doc, "", dry_run=True)
    assert not failed
    assert result["dry_run"] is True
    assert result["actions"] == ["systemd unit: a", "Service start: b", "Service start: c"]
    assert result["msg"].startswith("Lemonade 10.6.0: would change: ")


def test_failure_carries_the_installers_error_and_step(module: ModuleType) -> None:
    steps = [
        {"name": "Lemonade release", "status": "changed", "detail": ""},
        {"name": "Service start", "status": "failed", "detail": "not healthy"},
    ]
    error = "[Service start] hal0-lemonade did not become healthy (hint: journalctl ...)"
    doc = _doc(ok=False, changed=True, steps=steps, error=error)
    failed, result = module.interpret(1, doc, "", dry_run=False)
    assert failed
    assert result["msg"] == error
    assert result["failed_step"] == "Service start"
    # Files did change before the failure: Ansible shows it as changed and failed.
    assert result["changed"] is True


def test_settings_error_exit_2_with_json(module: ModuleType) -> None:
    doc = _doc(ok=False, version="", error="--threads 1 is below 2")
    failed, result = module.interpret(2, doc, "", dry_run=False)
    assert failed
    assert result["msg"] == "--threads 1 is below 2"
    assert "failed_step" not in result


def test_usage_error_without_json(module: ModuleType) -> None:
    stderr = "Usage: hal0-lemonade install [OPTIONS]\nError: No such option '--bogus'.\n"
    failed, result = module.interpret(2, "", stderr, dry_run=False)
    assert failed
    assert result["changed"] is False
    assert result["msg"].startswith("hal0-lemonade install exited 2: Usage:")
    assert "--bogus" in result["msg"]


def test_exit_code_and_json_disagree(module: ModuleType) -> None:
    failed, result = module.interpret(1, _doc(), "", dry_run=False)
    assert failed
    assert "exited 1 although its JSON says ok" in result["msg"]


def test_pending_push_reports_the_release_step_only(module: ModuleType) -> None:
    params = {**PARAMS, "version": "10.6.1", "artifact": "/var/cache/hal0-lemonade/a.tar.gz"}
    result = module.pending_push(params, ["python3", "x", "install"])
    assert result["changed"] is True
    assert result["dry_run"] is True
    assert result["actions"] == [
        f"Lemonade release: install Lemonade 10.6.1 from {params['artifact']} once pushed"
    ]
    assert result["msg"].startswith("Lemonade 10.6.1: would change: Lemonade release")
    assert module.pending_push({**params, "version": None}, [])["msg"].startswith(
        "the pinned release: would change"
    )


def _run_module(tmp_path: Path, check_mode: bool = False, **args: Any) -> dict[str, Any]:
    """The module as Ansible runs it on a host: its own process, arguments in a JSON file."""
    args_file = tmp_path / "args.json"
    module_args = {**args, "_ansible_check_mode": check_mode}
    args_file.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": module_args}))
    done = subprocess.run(
        [sys.executable, str(MODULE_PATH), str(args_file)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    result: dict[str, Any] = json.loads(done.stdout)
    return result


# Stands in for the pyz: prints the installer's JSON with the argv it was given. No exec bit,
# no shebang: it runs only because the module hands it to the interpreter.
FAKE_INSTALLER = """
import json, sys
print(json.dumps({"ok": True, "changed": False, "version": "10.6.0", "error": None,
                  "steps": [{"name": "argv", "status": "ok", "detail": " ".join(sys.argv)}]}))
"""


def test_the_interpreter_runs_the_installer(tmp_path: Path) -> None:
    installer = tmp_path / "hal0-lemonade"
    installer.write_text(FAKE_INSTALLER)
    installer.chmod(0o644)
    result = _run_module(
        tmp_path, executable=str(installer), interpreter=str(HOST_PYTHON), root=str(tmp_path)
    )
    assert result.get("failed") is not True, result
    assert result["cmd"][:3] == [str(HOST_PYTHON), str(installer), "install"]
    assert result["steps"][0]["detail"] == f"{installer} install --json --root {tmp_path}"
    # Without an interpreter the file must run by itself, and this one cannot.
    result = _run_module(tmp_path, executable=str(installer), interpreter="", root=str(tmp_path))
    assert result["failed"] is True
    assert result["msg"].startswith(f"hal0-lemonade is not installed at {installer}")


@pytest.mark.parametrize("check_mode", [False, True])
def test_a_missing_interpreter_fails_naming_it(tmp_path: Path, check_mode: bool) -> None:
    installer = tmp_path / "hal0-lemonade"
    installer.write_text(FAKE_INSTALLER)
    missing = str(tmp_path / "no-such-python3")
    result = _run_module(
        tmp_path, check_mode, executable=str(installer), interpreter=missing, root=str(tmp_path)
    )
    assert result["failed"] is True
    assert result["msg"].startswith(f"no {missing} on the host to run the installer with")
