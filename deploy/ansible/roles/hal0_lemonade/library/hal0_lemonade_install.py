#!/usr/bin/python
"""Ansible module: run ``hal0-lemonade install --json`` and map its result to Ansible.

The installer is the single implementation; this module only translates. It runs the
installer the role pushed (the one-file ``hal0-lemonade.pyz``) as a subprocess, with the
host's own python3; the module itself runs under whatever interpreter Ansible picked and
imports nothing but the stdlib and Ansible's module_utils.

- ``changed`` is the installer's ``changed``, nothing else.
- Check mode runs ``--dry-run``: ``changed`` is the plan's ``changed`` and ``actions`` lists
  what would be done ("Step: action").
- A failed install fails the host with the installer's ``error``, which names the step.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ansible.module_utils.basic import AnsibleModule  # type: ignore[import-untyped]

DOCUMENTATION = r"""
module: hal0_lemonade_install
short_description: Install Lemonade (lemond) as the hal0-lemonade service via its installer
description:
  - Runs C(hal0-lemonade install --json) on the host and reports its result.
  - C(changed) is exactly the installer's C(changed). Check mode runs C(--dry-run).
  - A failure fails the task with the installer's error message, which names the step.
options:
  executable:
    description: Path of the installer on the host (the pushed C(hal0-lemonade.pyz)).
    type: path
    default: /usr/local/sbin/hal0-lemonade
  interpreter:
    description:
      - The Python that runs I(executable) (3.11 or later); a bare name is looked up on PATH.
      - Empty runs I(executable) itself, through its shebang.
    type: str
    default: python3
  root:
    description: Install into this directory as if it were C(/) (C(--root)). Absolute.
    type: path
    default: /
  version:
    description: Lemonade release (C(--version)); empty for the installer's pin.
    type: str
  artifact:
    description: Archive URL (http, https, file) or path on the host (C(--artifact)).
    type: str
  sha256:
    description: Expected SHA-256 of the archive (C(--sha256)).
    type: str
  threads:
    description: llama.cpp C(--threads) (>= 2); empty lets the installer derive it.
    type: int
  start:
    description: Enable, start and health-check the service; false passes C(--no-start).
    type: bool
    default: true
  artifact_pushed:
    description:
      - I(artifact) is where an earlier task copies the archive, which check mode skips.
      - In check mode, when that archive is not on the host yet and the installer therefore
        cannot plan from it, the task reports the release step as pending instead of failing.
    type: bool
    default: false
"""

EXAMPLES = r"""
- name: Install the pinned release and start the service
  hal0_lemonade_install:
    executable: /usr/local/sbin/hal0-lemonade

- name: Install from a mirror with a pinned digest, files only
  hal0_lemonade_install:
    version: 10.6.0
    artifact: https://mirror.example/lemonade-embeddable-10.6.0-ubuntu-x64.tar.gz
    sha256: 3b50b5cc5a9695f970b85f5cf3023297bde215f2230c993134e670baab2474a1
    start: false
"""

RETURN = r"""
version:
  description: The Lemonade version the installer acted on.
  type: str
  returned: when the installer printed its JSON
steps:
  description: The installer's steps, each with name, status (ok/changed/skipped/failed), detail.
  type: list
  returned: when the installer printed its JSON
actions:
  description: In check mode, what would be done, as "Step: action".
  type: list
  returned: always
dry_run:
  description: True when the installer ran with --dry-run (check mode).
  type: bool
  returned: always
failed_step:
  description: Name of the step that failed.
  type: str
  returned: on failure, when a step failed
error:
  description: The installer's error (names the step), or null.
  type: str
  returned: always
cmd:
  description: The installer's command line.
  type: list
  returned: always
"""

# What to tell the operator when the CLI isn't there yet in check mode.
NOT_INSTALLED = "hal0-lemonade is not installed at {path} yet"


def build_argv(params: Mapping[str, Any], check_mode: bool) -> list[str]:
    """The installer's command line for the module's parameters."""
    interpreter = params.get("interpreter") or ""
    argv = [interpreter] if interpreter else []
    argv += [str(params["executable"]), "install", "--json", "--root", str(params["root"])]
    for option in ("version", "artifact", "sha256", "threads"):
        value = params.get(option)
        if value is not None and value != "":
            argv += [f"--{option}", str(value)]
    if not params.get("start", True):
        argv.append("--no-start")
    if check_mode:
        argv.append("--dry-run")
    return argv


def _failed_step(steps: Sequence[Mapping[str, Any]]) -> str | None:
    for step in steps:
        if step.get("status") == "failed":
            return str(step.get("name"))
    return None


def _actions(steps: Sequence[Mapping[str, Any]]) -> list[str]:
    return [f"{step.get('name')}: {action}" for step in steps for action in step.get("actions", [])]


def _summary(doc: Mapping[str, Any], dry_run: bool) -> str:
    changed = [str(s.get("name")) for s in doc.get("steps", []) if s.get("status") == "changed"]
    version = doc.get("version") or "?"
    if not changed:
        return f"Lemonade {version}: no changes"
    verb = "would change" if dry_run else "changed"
    return f"Lemonade {version}: {verb}: {', '.join(changed)}"


def interpret(rc: int, stdout: str, stderr: str, *, dry_run: bool) -> tuple[bool, dict[str, Any]]:
    """Map the installer's exit code and output to (failed, Ansible result fields)."""
    result: dict[str, Any] = {
        "rc": rc,
        "dry_run": dry_run,
        "actions": [],
        "error": None,
        "stderr": stderr,
    }
    try:
        doc = json.loads(stdout)
    except ValueError:
        doc = None
    if not isinstance(doc, dict) or not isinstance(doc.get("ok"), bool):
        # No JSON: a usage error (exit 2, click's message on stderr) or a crash.
        detail = (stderr or stdout).strip() or "no output"
        result.update(changed=False, msg=f"hal0-lemonade install exited {rc}: {detail}")
        result["error"] = result["msg"]
        return True, result
    steps = [s for s in doc.get("steps", []) if isinstance(s, dict)]
    result.update(
        changed=bool(doc.get("changed")),
        version=doc.get("version", ""),
        steps=steps,
        error=doc.get("error"),
        dry_run=bool(doc.get("dry_run", dry_run)),
        actions=_actions(steps),
    )
    if doc["ok"] and rc == 0:
        result["msg"] = _summary(doc, result["dry_run"])
        return False, result
    failed_step = _failed_step(steps)
    if failed_step is not None:
        result["failed_step"] = failed_step
    error = doc.get("error") or f"hal0-lemonade install exited {rc} without an error message"
    if doc["ok"]:  # exit code and JSON disagree: trust the failure
        error = f"hal0-lemonade install exited {rc} although its JSON says ok"
    result["msg"] = str(error)
    return True, result


def pending_push(params: Mapping[str, Any], argv: Sequence[str]) -> dict[str, Any]:
    """The check-mode result when the archive the role pushes is not on the host yet.

    The installer refuses a local archive that is missing, dry run or not (nothing to plan
    from), unless that release is already installed; check mode copies nothing, so a new
    release pushed from the control node is only known to the real run. What is certain is
    reported: the release step changes. The rest of the plan is not guessed at."""
    release = f"Lemonade {params['version']}" if params.get("version") else "the pinned release"
    return {
        "changed": True,
        "dry_run": True,
        "actions": [f"Lemonade release: install {release} from {params['artifact']} once pushed"],
        "msg": f"{release}: would change: Lemonade release (its archive is pushed first; "
        "the rest of the plan shows on the real run)",
        "error": None,
        "cmd": list(argv),
    }


def _interpreter(module: Any, name: str) -> str | None:
    """The interpreter's path on the host ("" when the executable runs by its shebang), or
    None when there is none: a bare name is looked up as the shell would (and in the sbin
    directories), a path must be executable."""
    if not name:
        return ""
    if "/" in name:
        return name if os.access(name, os.X_OK) else None
    found: str | None = module.get_bin_path(name)
    return found


def _present(executable: str, direct: bool) -> bool:
    """The installer is there to run: a file, executable when it runs by its shebang."""
    return Path(executable).is_file() and os.access(executable, os.X_OK if direct else os.R_OK)


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "executable": {"type": "path", "default": "/usr/local/sbin/hal0-lemonade"},
            "interpreter": {"type": "str", "default": "python3"},
            "root": {"type": "path", "default": "/"},
            "version": {"type": "str"},
            "artifact": {"type": "str"},
            "sha256": {"type": "str"},
            "threads": {"type": "int"},
            "start": {"type": "bool", "default": True},
            "artifact_pushed": {"type": "bool", "default": False},
        },
        supports_check_mode=True,
    )
    params = dict(module.params)
    argv = build_argv(params, module.check_mode)
    if not Path(params["root"]).is_absolute():
        module.fail_json(msg=f"root must be an absolute path, got {params['root']!r}", cmd=argv)
    interpreter = _interpreter(module, params["interpreter"] or "")
    if interpreter is None:
        # Fails in check mode too: the real run could not start the installer either.
        module.fail_json(
            msg=f"no {params['interpreter']} on the host to run the installer with: hosts need "
            "python3 3.11 or later (the role's hal0_lemonade_interpreter names it)",
            cmd=argv,
        )
    params["interpreter"] = interpreter
    argv = build_argv(params, module.check_mode)
    if not _present(params["executable"], direct=not interpreter):
        if module.check_mode:
            # First run on this host: the push task did not run in check mode either.
            module.exit_json(
                changed=True,
                dry_run=True,
                actions=[f"install: {NOT_INSTALLED.format(path=params['executable'])}"],
                msg=NOT_INSTALLED.format(path=params["executable"])
                + "; the first install would run",
                error=None,
                cmd=argv,
            )
        module.fail_json(
            msg=NOT_INSTALLED.format(path=params["executable"])
            + " (the role's push task puts it there)",
            cmd=argv,
        )
    rc, stdout, stderr = module.run_command(argv)
    failed, result = interpret(rc, stdout, stderr, dry_run=module.check_mode)
    result["cmd"] = argv
    artifact = params["artifact"] or ""
    pending = params["artifact_pushed"] and artifact and not Path(artifact).exists()
    # Asked first all the same: for an installed release the installer plans without it; and
    # only its refusal of that very path is taken for "not pushed yet", no other error.
    if failed and module.check_mode and pending and artifact in str(result.get("error")):
        module.exit_json(**pending_push(params, argv))
    if failed:
        module.fail_json(**result)
    for line in stderr.splitlines():
        if line.strip():
            module.warn(line.strip())
    module.exit_json(**result)


if __name__ == "__main__":
    main()
