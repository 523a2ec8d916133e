"""The role, run for real: ansible-playbook on the example playbook against localhost.

Two 'hosts' feed the release the two documented ways: ``pushed`` gets the archive copied
from the control node, ``mirror`` downloads it from a loopback mirror URL. They share one
installer path (as hosts on one machine would): ``pushed``, first in the rollout, pushes
the pyz there with its digest pinned; ``mirror`` takes the role's default source (this
checkout's dist/, unpinned) and finds the same bytes already in place.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.ansible.conftest import (
    HOST_PYTHON,
    INSTALL_TASK,
    PUSH_TASK,
    PYZ_CHECK_TASK,
    Fleet,
    PlayRun,
    Pyz,
    snapshot,
)
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
        "mirror": fleet.host_vars("mirror", hal0_lemonade_artifact_url=url),
    }
    # The role's defaults: the repository's dist/hal0-lemonade.pyz, no digest pinned.
    del hosts["mirror"]["hal0_lemonade_pyz_src"], hosts["mirror"]["hal0_lemonade_pyz_sha256"]
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
    # The installer was pushed once, root-owned and executable, and run by the host's python3.
    assert run.task("pushed", PUSH_TASK)["result"]["changed"] is True
    # The default source is this checkout's dist/: the same bytes, so no second copy.
    assert run.task("mirror", PUSH_TASK)["result"]["changed"] is False
    assert fleet.executable.read_bytes() == fleet.pyz.path.read_bytes()
    st = fleet.executable.stat()
    assert (st.st_mode & 0o7777, st.st_uid, st.st_gid) == (0o755, 0, 0)
    for host in ("pushed", "mirror"):
        cmd = run.task(host, INSTALL_TASK)["result"]["cmd"]
        assert cmd[:3] == [str(HOST_PYTHON), str(fleet.executable), "install"]
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
        # A new host: an empty root (the installer is already there).
        "fresh": fleet.host_vars(
            "fresh",
            hal0_lemonade_artifact_url=provisioned.hosts["mirror"]["hal0_lemonade_artifact_url"],
        ),
        # A new host fed from the control node: the archive is not there to plan from yet.
        "fresh-pushed": fleet.host_vars(
            "fresh-pushed", hal0_lemonade_artifact_src=str(fleet.release.path)
        ),
        # A host that has nothing at all yet, not even the installer.
        "bare": fleet.host_vars(
            "bare",
            hal0_lemonade_executable=str(fleet.sbin("bare") / "hal0-lemonade"),
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
    assert run.changed("fresh") == [INSTALL_TASK]

    # The archive push would happen; check mode reports it without copying, and the install
    # reports the release it would bring rather than failing on the archive not yet there.
    fresh_pushed = run.task("fresh-pushed", INSTALL_TASK)["result"]
    assert fresh_pushed["changed"] is True
    assert fresh_pushed["dry_run"] is True
    assert fresh_pushed["actions"] == [
        f"Lemonade release: install Lemonade 10.6.0 from "
        f"{fleet.sandbox / 'cache' / 'fresh-pushed' / fleet.release.name} once pushed"
    ]
    assert "hal0_lemonade : Push the Lemonade archive" in " ".join(run.changed("fresh-pushed"))

    bare = run.task("bare", INSTALL_TASK)["result"]
    assert bare["changed"] is True
    assert "not installed" in bare["msg"]
    assert PUSH_TASK in run.changed("bare")


def test_wrong_digest_fails_the_host_and_stops_the_rollout(provisioned: Provisioned) -> None:
    fleet = provisioned.fleet
    wrong = "0" * 63 + "1"
    hosts = {
        "first": fleet.host_vars(
            "first",
            hal0_lemonade_artifact_src=str(fleet.release.path),
            hal0_lemonade_sha256=wrong,
        ),
        "second": fleet.host_vars("second", hal0_lemonade_artifact_src=str(fleet.release.path)),
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


@pytest.mark.parametrize("case", ["another build", "no build"])
def test_a_pyz_that_is_not_the_pinned_build_is_never_pushed(
    provisioned: Provisioned, rebuilt_pyz: Pyz, case: str
) -> None:
    """The control node's file is checked before the push: a host never gets another build."""
    fleet = provisioned.fleet
    src = rebuilt_pyz.path if case == "another build" else fleet.base / "dist" / "missing.pyz"
    hosts = {
        host: fleet.host_vars(
            host,
            hal0_lemonade_pyz_src=str(src) if host == "refused" else str(fleet.pyz.path),
            hal0_lemonade_executable=str(fleet.sbin(host) / "hal0-lemonade"),
            hal0_lemonade_artifact_src=str(fleet.release.path),
        )
        for host in ("refused", "next")
    }
    run = fleet.play(hosts)
    assert run.rc != 0, run.output
    assert run.failed("refused") == [PYZ_CHECK_TASK]
    msg = run.task("refused", PYZ_CHECK_TASK)["result"]["msg"]
    if case == "another build":
        assert f"has SHA-256 {rebuilt_pyz.sha256}, expected {fleet.pyz.sha256}" in msg
        assert "not pushed" in msg
    else:
        assert f"no installer at {src} on the control node" in msg
        assert "bash scripts/pyz" in msg
    assert msg in run.output
    # Nothing reached the host: no installer, no archive, an untouched root.
    assert list(fleet.sbin("refused").iterdir()) == []
    assert not (fleet.sandbox / "cache" / "refused").exists()
    assert list(fleet.root("refused").iterdir()) == []
    # And the rollout stopped there.
    assert run.results("next") == []


def test_a_new_pyz_is_pushed_and_changed_on_the_copy_task(
    provisioned: Provisioned, rebuilt_pyz: Pyz
) -> None:
    """A new build is pushed (changed), and pinning its digest lets it through; the install
    itself reports what the installer says, here nothing, as the release is in place."""
    fleet = provisioned.fleet
    executable = fleet.sbin("upgraded") / "hal0-lemonade"
    vars_ = {
        **provisioned.hosts["pushed"],
        "hal0_lemonade_executable": str(executable),
    }
    first = fleet.play({"pushed": vars_})
    assert first.rc == 0, first.output
    assert first.changed("pushed") == [PUSH_TASK]
    new = {**vars_, "hal0_lemonade_pyz_src": str(rebuilt_pyz.path)}
    new["hal0_lemonade_pyz_sha256"] = rebuilt_pyz.sha256.upper()  # as some tools print it
    run = fleet.play({"pushed": new})
    assert run.rc == 0, run.output
    assert run.changed("pushed") == [PUSH_TASK]
    digest = hashlib.sha256(executable.read_bytes()).hexdigest()
    assert digest == rebuilt_pyz.sha256 != fleet.pyz.sha256
    install = run.task("pushed", INSTALL_TASK)["result"]
    assert install["cmd"][1] == str(executable)
    assert install["msg"] == "Lemonade 10.6.0: no changes"
