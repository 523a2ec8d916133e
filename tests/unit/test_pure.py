"""Pure functions: thread rule, CPU budget parsers, pins, markers, config merge, accounts."""

from __future__ import annotations

from pathlib import Path

import pytest

from hal0_lemonade import cpus, releases
from hal0_lemonade.errors import IntegrityError, UsageError
from hal0_lemonade.resources import account, daemon_config, release_tree


@pytest.mark.parametrize(
    ("n", "threads"),
    [(1, 2), (2, 2), (8, 2), (10, 2), (13, 2), (14, 3), (16, 3), (32, 7), (64, 15)],
)
def test_thread_rule(n: int, threads: int) -> None:
    assert cpus.threads_for(n) == threads


def test_cgroup_parsers() -> None:
    assert cpus.parse_cgroup2_max("max 100000\n") is None
    assert cpus.parse_cgroup2_max("250000 100000\n") == 2.5
    assert cpus.parse_cgroup1_quota("-1", "100000") is None
    assert cpus.parse_cgroup1_quota("50000\n", "100000\n") == 0.5


def test_cgroup2_quota_caps_affinity(tmp_path: Path) -> None:
    proc, sys = tmp_path / "proc", tmp_path / "sys"
    (proc / "self").mkdir(parents=True)
    (proc / "self/cgroup").write_text("0::/system.slice/x.service\n")
    cg = sys / "fs/cgroup/system.slice/x.service"
    cg.mkdir(parents=True)
    (cg / "cpu.max").write_text("100000 100000\n")
    budget = cpus.detect(sys_root=sys, proc_root=proc)
    assert budget.cpus == 1
    assert "quota" in budget.source


def test_unreadable_cgroup_falls_back_to_affinity(tmp_path: Path) -> None:
    budget = cpus.detect(sys_root=tmp_path, proc_root=tmp_path)
    assert budget.cpus is not None and budget.cpus >= 1


def test_resolve_pinned_default() -> None:
    pin = releases.resolve(None, None, None, skip_sha=False)
    assert pin.version == "10.6.0"
    assert pin.sha256 == "3b50b5cc5a9695f970b85f5cf3023297bde215f2230c993134e670baab2474a1"
    assert pin.artifact.endswith("/v10.6.0/lemonade-embeddable-10.6.0-ubuntu-x64.tar.gz")
    assert pin.verified and pin.source == "pin"


def test_placeholder_in_manifest_is_refused_then_waived() -> None:
    manifest = releases.load_manifest()
    manifest["releases"]["10.6.0"]["sha256"] = "0" * 64
    with pytest.raises(IntegrityError, match="placeholder"):
        releases.resolve(None, None, None, skip_sha=False, manifest=manifest)
    pin = releases.resolve(None, None, None, skip_sha=True, manifest=manifest)
    assert not pin.verified and pin.release_id == "10.6.0-unverified"


@pytest.mark.parametrize("version", ["../x", "1.0/2", ".hidden", "", "a b", "1..2"])
def test_hostile_versions_are_usage_errors(version: str) -> None:
    with pytest.raises(UsageError):
        releases.validate_version(version)


def test_marker_round_trip() -> None:
    pin = releases.Pin("10.6.0", "x", "ab" * 32, True, "pin")
    version, fields = release_tree.parse_marker(release_tree.format_marker(pin))
    assert version == "10.6.0" and fields["sha256"] == "ab" * 32 and fields["verified"] == "yes"
    assert release_tree.parse_marker("10.5.0\n") == ("10.5.0", {})  # a seed-era marker
    assert release_tree.parse_marker("") == (None, {})


def test_merge_enforces_locked_and_keeps_the_rest() -> None:
    locked = daemon_config.baseline(threads=3, host="127.0.0.1", port=13305, models_dir="/m")
    current = {"host": "192.0.2.1", "llamacpp": {"args": "", "cpu_args": "-x"}, "offline": True}
    merged = daemon_config.merge(current, locked)
    assert merged["host"] == "127.0.0.1"
    assert merged["offline"] is True
    assert merged["llamacpp"] == {
        "args": "--parallel 1 --threads 3",
        "cpu_args": "-x",
        "backend": "rocm",
        "prefer_system": False,
    }
    assert current["host"] == "192.0.2.1"  # the input is not mutated


def test_account_parsers() -> None:
    users = account.parse_passwd(
        "root:x:0:0:root:/root:/bin/bash\n"
        "bad line\n"
        "hal0:x:998:997::/var/lib/hal0:/usr/sbin/nologin\n"
    )
    assert users["hal0"].uid == 998 and users["hal0"].shell == "/usr/sbin/nologin"
    groups = account.parse_group("render:x:105:hal0,alice\nvideo:x:44:\n")
    accounts = account.Accounts(users, groups)
    assert accounts.supplementary("hal0") == {"render"}
