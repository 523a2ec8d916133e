"""The Ansible role against a booted systemd: the service really starts.

The control node runs inside the container (ansible-core has no connection plugin for
nspawn): the project's .venv (which holds ansible-core) and deploy/ansible are bound in
read-only at their own paths, the playbook runs with the local connection, and the role's
module runs under the container's bare ``/usr/bin/python3``. The role makes its own venv at
/opt/hal0-lemonade/venv from the e2e wheels and installs to ``/`` from the release server
inside the container.
"""

from __future__ import annotations

import json
import shlex
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.ansible.callback_plugins.hal0_record import RECORD_ENV
from tests.e2e.conftest import E2E, serve_releases
from tests.e2e.harness import MARKER, RELEASES, UNIT, WHEELS, Container, booted
from tests.support.archives import Release

pytestmark = [pytest.mark.e2e, pytest.mark.ansible]

PROJECT_DIR = Path(__file__).resolve().parents[2]
ANSIBLE_DIR = PROJECT_DIR / "deploy" / "ansible"
CALLBACKS = PROJECT_DIR / "tests" / "ansible" / "callback_plugins"
CONTROL_VENV = Path(sys.prefix)
INSTALL_TASK = "hal0_lemonade : Install Lemonade as the hal0-lemonade service"
ROLE_CLI = "/opt/hal0-lemonade/venv/bin/hal0-lemonade"


@pytest.fixture(scope="module")
def host(e2e: E2E) -> Iterator[Container]:
    host_python = f"{sys.version_info.major}.{sys.version_info.minor}"
    if e2e.suite.python != host_python:
        pytest.skip(
            f"the control node runs from this host's venv (python {host_python}), which "
            f"{e2e.suite.debian}'s python {e2e.suite.python} cannot load; the role is tested "
            f"on the root whose python matches"
        )
    binds = [
        (e2e.wheels, WHEELS),
        (e2e.releases.directory, RELEASES),
        (CONTROL_VENV, str(CONTROL_VENV)),
        (ANSIBLE_DIR, str(ANSIBLE_DIR)),
        (CALLBACKS, str(CALLBACKS)),
    ]
    with booted(e2e.rootfs, e2e.workdir, binds_ro=binds) as container:
        serve_releases(container)
        yield container


class Play:
    def __init__(self, rc: int, output: str, records: list[dict[str, Any]]) -> None:
        self.rc, self.output, self.records = rc, output, records

    def install(self) -> dict[str, Any]:
        for record in self.records:
            if record["task"] == INSTALL_TASK:
                result: dict[str, Any] = record["result"]
                return result
        raise AssertionError(f"the install task did not run:\n{self.output}")

    def changed(self) -> list[str]:
        return [r["task"] for r in self.records if r["result"].get("changed")]


_runs = iter(range(1, 100))


def play(host: Container, e2e: E2E, release: Release) -> Play:
    n = next(_runs)
    inventory = {
        "lemonade": {
            "hosts": {
                "booted": {
                    "ansible_connection": "local",
                    "ansible_python_interpreter": "/usr/bin/python3",
                    "ansible_become": False,
                    "hal0_lemonade_manage_os_packages": False,
                    "hal0_lemonade_wheels_src": WHEELS,
                    "hal0_lemonade_version": release.version,
                    "hal0_lemonade_sha256": release.sha256,
                    "hal0_lemonade_artifact_url": e2e.releases.url(release),
                }
            }
        }
    }
    host.run(f"cat > /root/inventory-{n}.yml", input=json.dumps(inventory))
    env = {
        "ANSIBLE_CONFIG": f"{ANSIBLE_DIR}/ansible.cfg",
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_CALLBACK_PLUGINS": str(CALLBACKS),
        "ANSIBLE_CALLBACKS_ENABLED": "hal0_record",
        RECORD_ENV: f"/root/record-{n}.jsonl",
    }
    command = [
        "env",
        *(f"{k}={v}" for k, v in env.items()),
        f"{CONTROL_VENV}/bin/ansible-playbook",
        "-i",
        f"/root/inventory-{n}.yml",
        f"{ANSIBLE_DIR}/examples/site.yml",
    ]
    host.run(f": > /root/record-{n}.jsonl")
    done = host.run(f"cd {ANSIBLE_DIR} && {shlex.join(command)}", check=False, timeout=300)
    lines = host.read(f"/root/record-{n}.jsonl").splitlines()
    return Play(done.returncode, done.stdout + done.stderr, [json.loads(x) for x in lines])


def test_first_run_installs_and_starts_the_service(host: Container, e2e: E2E) -> None:
    run = play(host, e2e, e2e.releases.base)
    assert run.rc == 0, f"{run.output}\n--- journal\n{host.journal()}"
    install = run.install()
    assert install["changed"] is True
    steps = {s["name"]: s["status"] for s in install["steps"]}
    assert steps["Service start"] == "changed"
    assert host.show("ActiveState") == "active"
    assert host.health()
    assert host.read(MARKER).splitlines()[0] == e2e.releases.base.version
    assert host.exists(ROLE_CLI)


def test_second_run_changes_nothing_and_keeps_the_daemon(host: Container, e2e: E2E) -> None:
    pid = host.main_pid()
    run = play(host, e2e, e2e.releases.base)
    assert run.rc == 0, run.output
    assert run.changed() == [], run.output
    assert host.main_pid() == pid


def test_upgrade_restarts_onto_the_new_release(host: Container, e2e: E2E) -> None:
    run = play(host, e2e, e2e.releases.upgrade)
    assert run.rc == 0, f"{run.output}\n--- journal\n{host.journal()}"
    assert run.install()["changed"] is True
    assert host.read(MARKER).splitlines()[0] == e2e.releases.upgrade.version
    assert host.wait_healthy()["version"] == e2e.releases.upgrade.version


def test_a_release_that_cannot_start_fails_the_host(host: Container, e2e: E2E) -> None:
    run = play(host, e2e, e2e.releases.broken)
    assert run.rc != 0, run.output
    install = run.install()
    assert install["failed_step"] == "Service start", install
    assert install["msg"].startswith("[Service start]"), install["msg"]
    assert install["msg"] in run.output
    assert f"journalctl -u {UNIT}" in install["msg"]
