"""The Ansible role against a booted systemd: the service really starts.

The control node runs inside the container (ansible-core has no connection plugin for
nspawn): a venv at /opt/control made by the container's own python3 from ansible-core wheels
downloaded on the host for that python (so Debian 13's 3.13 runs it as Debian 12's 3.11
does), with deploy/ansible bound in read-only at its own path; the playbook runs with the
local connection. The host side is what a fleet host has: the role checks the one-file
installer (the session's pyz, bound at /pyz) against its pinned digest, pushes it to
/usr/local/sbin/hal0-lemonade, and runs it and its own module under the container's bare
``/usr/bin/python3``, with no venv, and installs to ``/`` from the release server inside.
"""

from __future__ import annotations

import hashlib
import json
import shlex
import subprocess
import sys
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest

from tests.ansible.callback_plugins.hal0_record import RECORD_ENV
from tests.e2e.conftest import E2E, serve_releases
from tests.e2e.harness import CLI, MARKER, PYZ, RELEASES, UNIT, Container, booted
from tests.support.archives import Release

pytestmark = [pytest.mark.e2e, pytest.mark.ansible]

PROJECT_DIR = Path(__file__).resolve().parents[2]
ANSIBLE_DIR = PROJECT_DIR / "deploy" / "ansible"
CALLBACKS = PROJECT_DIR / "tests" / "ansible" / "callback_plugins"
CONTROL_VENV = "/opt/control"
CONTROL_WHEELS = "/control-wheels"
INSTALL_TASK = "hal0_lemonade : Install Lemonade as the hal0-lemonade service"
PUSH_TASK = "hal0_lemonade : Push the installer (hal0-lemonade.pyz)"
# The ansible-core this checkout's tests run with, for the control node inside too.
ANSIBLE_CORE = f"ansible-core=={version('ansible-core')}"
# Binary wheels a root's glibc can load (Debian 12 has 2.36); pip does not widen
# manylinux_2_x platforms on its own the way it widens manylinux2014.
PLATFORMS = ["manylinux2014_x86_64", *(f"manylinux_2_{n}_x86_64" for n in range(17, 37))]


def _control_wheels(e2e: E2E) -> Path:
    """ansible-core and its dependencies as wheels for the root's python (pip inside the
    container has no network): the control node must not be this host's 3.11 venv."""
    wheels = e2e.workdir / f"control-wheels-{e2e.suite.name}"
    platforms = [arg for platform in PLATFORMS for arg in ("--platform", platform)]
    done = subprocess.run(
        [
            sys.executable, "-m", "pip", "download", "-q", "--disable-pip-version-check",
            "--only-binary=:all:", "--python-version", e2e.suite.python, *platforms,
            "-d", str(wheels), ANSIBLE_CORE,
        ],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        pytest.fail(f"pip download {ANSIBLE_CORE} for python {e2e.suite.python}:\n{done.stderr}")
    return wheels


@pytest.fixture(scope="module")
def host(e2e: E2E) -> Iterator[Container]:
    binds = [
        (_control_wheels(e2e), CONTROL_WHEELS),
        (e2e.pyz.parent, str(Path(PYZ).parent)),
        (e2e.releases.directory, RELEASES),
        (ANSIBLE_DIR, str(ANSIBLE_DIR)),
        (CALLBACKS, str(CALLBACKS)),
    ]
    with booted(e2e.rootfs, e2e.workdir, binds_ro=binds) as container:
        container.run(["python3", "-m", "venv", CONTROL_VENV], timeout=120)
        pip = [f"{CONTROL_VENV}/bin/pip", "install", "-q", "--disable-pip-version-check"]
        container.run(
            [*pip, "--no-index", "--find-links", CONTROL_WHEELS, ANSIBLE_CORE], timeout=300
        )
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
                    "hal0_lemonade_pyz_src": PYZ,
                    "hal0_lemonade_pyz_sha256": hashlib.sha256(e2e.pyz.read_bytes()).hexdigest(),
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
    # The installer is the pushed pyz, root's, run by the root's own python3; no venv.
    assert PUSH_TASK in run.changed()
    assert host.out(["stat", "-c", "%a %U:%G", CLI]) == "755 root:root"
    digest = host.out(["sha256sum", CLI]).split()[0]
    assert digest == hashlib.sha256(e2e.pyz.read_bytes()).hexdigest()
    assert install["cmd"][:3] == ["/usr/bin/python3", CLI, "install"]
    assert not host.exists("/opt/hal0-lemonade")
    # The control node ran on the root's own python, whichever Debian this is.
    control = [
        f"{CONTROL_VENV}/bin/python",
        "-c",
        "import sys; print(*sys.version_info[:2], sep='.')",
    ]
    assert host.out(control) == e2e.suite.python


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
