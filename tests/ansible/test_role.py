"""The role, run for real: ansible-playbook on the example playbook against localhost.

Two 'hosts' feed the release the two documented ways: ``pushed`` gets the archive copied
from the control node, ``mirror`` downloads it from a loopback mirror URL. They share one
package venv, made from the project's wheels: ``pushed`` takes the wheel-push path (the
wheels copied from the control node), the others the index path, pointed at the wheels
already on the host (as at a local wheelhouse), which keeps the suite fast.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.ansible.conftest import INSTALL_TASK, PIP_TASK, Fleet, PlayRun, snapshot
from tests.support.httpserver import HTTPTestServer

pytestmark = pytest.mark.ansible


@dataclass
class Provisioned:
    fleet: Fleet
    hosts: dict[str, dict[str, Any]]
    first: PlayRun
    second: PlayRun
    downloads: tuple[int, int]  # the mirror's GETs after the first run, after the second


@pytest.fixture(scope="module")
def provisioned(fleet: Fleet, mirror: tuple[HTTPTestServer, str]) -> Provisioned:
    """The same inventory played twice."""
    server, url = mirror
    hosts = {
        "pushed": fleet.host_vars("pushed", hal0_lemonade_artifact_src=str(fleet.release.path)),
        "mirror": fleet.host_vars("mirror", hal0_lemonade_artifact_url=url, **fleet.index_source),
    }
    path = url.removeprefix(server.base_url)

    def gets() -> int:
        return sum(1 for r in server.requests_for(path) if r.method == "GET")

    first = fleet.play(hosts)
    after_first = gets()
    second = fleet.play(hosts)
    return Provisioned(fleet, hosts, first, second, (after_first, gets()))


def test_first_run_installs_and_reports_changed(provisioned: Provisioned) -> None:
    run, fleet = provisioned.first, provisioned.fleet
    assert run.rc == 0, run.output
    for host in ("pushed", "mirror"):
        install = run.task(host, INSTALL_TASK)
        assert install["status"] == "ok"
        assert install["result"]["changed"] is True
        assert install["result"]["dry_run"] is False
        statuses = {s["name"]: s["status"] for s in install["result"]["steps"]}
        assert statuses["Lemonade release"] == "changed"
        assert statuses["Daemon config"] == "changed"
        root = fleet.root(host)
        marker = (root / "opt/lemonade/.installed-version").read_text()
        assert marker.splitlines()[0] == "10.6.0"
        assert (root / "etc/systemd/system/hal0-lemonade.service").is_file()
        config = json.loads((root / "var/lib/hal0/lemonade/config.json").read_text())
        assert config["port"] == 13305
    # The package path ran for real: pip installed the pushed wheels into the venv.
    assert run.task("pushed", PIP_TASK)["result"]["changed"] is True
    assert list((fleet.home / "venv").glob("lib/python3*/site-packages/hal0_lemonade"))
    # How each host got the archive: pushed into its cache, or fetched from the mirror.
    pushed_args = run.task("pushed", INSTALL_TASK)["result"]["cmd"]
    assert pushed_args[pushed_args.index("--artifact") + 1] == str(
        fleet.sandbox / "cache" / "pushed" / fleet.release.name
    )
    mirror_args = run.task("mirror", INSTALL_TASK)["result"]["cmd"]
    assert mirror_args[mirror_args.index("--artifact") + 1].startswith("http://127.0.0.1:")
    assert provisioned.downloads[0] == 1


def test_second_run_is_ok_with_no_changes(provisioned: Provisioned) -> None:
    run = provisioned.second
    assert run.rc == 0, run.output
    for host in ("pushed", "mirror"):
        assert run.changed(host) == [], run.output
        install = run.task(host, INSTALL_TASK)
        assert install["result"]["changed"] is False
        assert install["result"]["msg"] == "Lemonade 10.6.0: no changes"
        assert {s["status"] for s in install["result"]["steps"]} == {"ok"}
    # A converged host downloads nothing.
    assert provisioned.downloads[1] == provisioned.downloads[0]
    recap = run.output.split("PLAY RECAP")[1]
    for host in ("pushed", "mirror"):
        assert re.search(rf"^{host} +: ok=\d+ +changed=0 +unreachable=0 +failed=0", recap, re.M)


def test_check_mode_changes_nothing_and_reports_what_would(provisioned: Provisioned) -> None:
    fleet = provisioned.fleet
    hosts = {
        # Installed, but the operator now wants another thread count.
        "pushed": {**provisioned.hosts["pushed"], "hal0_lemonade_threads": 3},
        # A new host: an empty root (the package venv is already there).
        "fresh": fleet.host_vars(
            "fresh", hal0_lemonade_artifact_src=str(fleet.release.path), **fleet.index_source
        ),
        # A host that has nothing at all yet, not even the package.
        "bare": fleet.host_vars(
            "bare",
            hal0_lemonade_home=str(fleet.sandbox / "bare-home"),
            hal0_lemonade_artifact_src=str(fleet.release.path),
        ),
    }
    before = snapshot(fleet.sandbox)
    run = fleet.play(hosts, "--check")
    assert run.rc == 0, run.output
    assert snapshot(fleet.sandbox) == before

    pushed = run.task("pushed", INSTALL_TASK)["result"]
    assert pushed["changed"] is True
    assert pushed["dry_run"] is True
    assert "--dry-run" in pushed["cmd"]
    assert pushed["actions"] == ["Daemon config: write /var/lib/hal0/lemonade/config.json"]
    assert run.changed("pushed") == [INSTALL_TASK]

    fresh = run.task("fresh", INSTALL_TASK)["result"]
    assert fresh["changed"] is True
    steps = [action.split(":")[0] for action in fresh["actions"]]
    for step in ("Lemonade release", "Service account", "Daemon config", "systemd unit"):
        assert step in steps
    # The archive push would happen too; check mode reports it without copying.
    assert "hal0_lemonade : Push the Lemonade archive" in " ".join(run.changed("fresh"))

    bare = run.task("bare", INSTALL_TASK)["result"]
    assert bare["changed"] is True
    assert "not installed" in bare["msg"]
    assert "hal0_lemonade : Create the venv with the host's python3" in run.changed("bare")


def test_wrong_digest_fails_the_host_and_stops_the_rollout(provisioned: Provisioned) -> None:
    fleet = provisioned.fleet
    wrong = "0" * 63 + "1"
    hosts = {
        "first": fleet.host_vars(
            "first",
            hal0_lemonade_artifact_src=str(fleet.release.path),
            hal0_lemonade_sha256=wrong,
            **fleet.index_source,
        ),
        "second": fleet.host_vars(
            "second", hal0_lemonade_artifact_src=str(fleet.release.path), **fleet.index_source
        ),
    }
    run = fleet.play(hosts)
    assert run.rc != 0, run.output
    assert run.failed("first") == [INSTALL_TASK]
    result = run.task("first", INSTALL_TASK)["result"]
    assert result["msg"].startswith("[Lemonade release] SHA-256 mismatch")
    assert f"expected {wrong}, got {fleet.release.sha256}" in result["msg"]
    assert result["failed_step"] == "Lemonade release"
    assert result["msg"] in run.output
    # serial: 1 + max_fail_percentage: 0: the next host is never touched.
    assert run.results("second") == []
    assert list(Path(fleet.root("second")).iterdir()) == []
    # The refused archive never went live; nothing past the release step ran.
    first = fleet.root("first")
    assert not (first / "opt/lemonade").exists()
    assert not (first / "etc").exists()
    assert not (first / "var").exists()
